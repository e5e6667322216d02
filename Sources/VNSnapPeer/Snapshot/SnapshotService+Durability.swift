import Foundation
import Logging
import NIOPosix
import VNSnapCore
import VNSnapHypervisor
import VNSnapImage

/// Making a participant's images durable, and ending its part of a snapshot (commit or abort).
extension SnapshotService {
    /// How long after its last cut a peer waits for the channels into its VMs to drain before closing the logs
    /// with what arrived (a lost frame can never arrive; the manifest then says `drained: false`).
    static let drainTimeout = Duration.seconds(3)

    /// Waits for every local image stream and channel, writes the channel logs and records everything in the
    /// catalog; returns the report for the initiator, or why not.
    func makeDurable(_ id: UInt64) async -> Result<[UInt8], SnapshotError> {
        guard let run = self.participants[id] else {
            return .failure(SnapshotError(.notFound, "snapshot \(id) is gone"))
        }
        let key = run.machine.key
        do {
            var vms: [ParticipantReport.VM] = []
            var images: [String: [SnapshotManifest.ChunkDescriptor]] = [:]
            var durableAt: [String: Instant] = [:]
            for vm in run.machine.vms {
                // The writer first: when it fails (a full disk), QEMU only sees its socket closed.
                guard let writer = self.participants[id]?.writers[vm] else {
                    throw SnapshotError(.failed, "\(vm): no image writer")
                }
                do {
                    images[vm] = try await writer.wait(timeout: self.settings.streamTimeout)
                } catch {
                    throw SnapshotError(.failed, "\(vm): \(error.message)")
                }
                if let monitor = await self.monitor(vm) {
                    try await QEMUSnapshot.waitCompleted(monitor, timeout: self.settings.streamTimeout)
                }
                durableAt[vm] = .now
            }
            let drainDeadline = ContinuousClock.now + Self.drainTimeout
            for vm in run.machine.vms {
                while try await !self.switchService.isDrained(vm), ContinuousClock.now < drainDeadline {
                    try await Task.sleep(for: .milliseconds(5))
                }
            }
            for vm in run.machine.vms {
                // An abort heard while waiting has removed the files: writing the logs now would leave them behind.
                try self.checkNotEnded(id)
                guard let chunks = images[vm] else { throw SnapshotError(.failed, "\(vm): no image") }
                // Mode `loop` never armed the switch: no channel state, nothing measured there.
                let report =
                    try await self.switchService.snapshotReport(vm)
                    ?? PortSnapshotReport(
                        vm: vm,
                        counters: EpochGate.Counters(),
                        stall: 0,
                        stallStartAfterCut: nil,
                        log: [],
                        logOverflow: 0,
                        drained: run.plan.mode == .loop,
                        missing: [:]
                    )
                let directory = "\(self.directory(id))/\(vm)"
                let channelChunks = try await Self.writeChannelLog(
                    report.log,
                    to: LocalChunkStore(
                        directory: directory + "/channel",
                        label: "snapshot \(id), VM \(vm), channel log",
                        cipher: self.chunkCipher(id, vm: vm, kind: .channel)
                    )
                )
                // Memory targets: the image is in its stores' RAM; the channel log goes there too (and stays here).
                let stores = run.stores[vm] ?? []
                if !stores.isEmpty {
                    try await self.replicateChannelLog(
                        id,
                        vm: vm,
                        chunks: channelChunks,
                        from: LocalChunkStore(directory: directory + "/channel", label: "snapshot \(id), VM \(vm)"),
                        to: stores
                    )
                }
                try self.checkNotEnded(id)
                let here = (peer: self.config.peer.name, location: "disk")
                let inRAM = stores.map { (peer: $0.name, location: "ram") }
                try await self.catalog.recordImage(
                    snapshot: id,
                    vm: vm,
                    kind: .memory,
                    replicas: stores.isEmpty ? [here] : inRAM,
                    directory: directory + "/memory",
                    chunks: chunks
                )
                try await self.catalog.recordImage(
                    snapshot: id,
                    vm: vm,
                    kind: .channel,
                    replicas: [here] + inRAM,
                    directory: directory + "/channel",
                    chunks: channelChunks
                )
                if report.logOverflow > 0 || !report.drained {
                    self.logger.warning(
                        "Channel log incomplete",
                        metadata: [
                            "snapshot.id": "\(id)", "vm.name": "\(vm)", "snapshot.logOverflow": "\(report.logOverflow)",
                            "snapshot.missing": "\(report.missing)",
                        ]
                    )
                }
                let disk = try await self.describeDisk(run.outcomes[vm]?.disk ?? [], vm: vm)
                let backing = disk.map { Array($0.dropFirst()) }.flatMap { $0.isEmpty ? nil : $0 }
                let started = run.cutStarted[vm] ?? .now
                let durable = durableAt[vm] ?? .now
                vms.append(
                    ParticipantReport.VM(
                        name: vm,
                        image: ImageStreamFeeder.descriptor(of: chunks),
                        channel: SnapshotManifest.ChannelLog(
                            vm: vm,
                            frames: UInt64(report.log.count),
                            bytes: UInt64(report.log.reduce(0) { $0 + $1.count }),
                            image: ImageStreamFeeder.descriptor(of: channelChunks),
                            drained: report.drained && report.logOverflow == 0
                        ),
                        stall: report.stall,
                        stallStartAfterCut: report.stallStartAfterCut,
                        counters: report.counters,
                        timeToDurable: UInt64(max(0, started.duration(to: durable).inNanoseconds)),
                        queueWaitExpired: run.outcomes[vm]?.queueWaitExpired ?? false,
                        disk: disk.map { Array($0.prefix(1)) },
                        diskBacking: backing.map {
                            SnapshotManifest.DiskBacking(
                                files: $0.count,
                                digest: LocalChunkStore.hash(SnapshotManifest.DiskBacking.digestInput($0))
                            )
                        },
                        replicas: stores.isEmpty ? nil : stores.map(\.name),
                        definition: self.hosted.definition(vm),
                        sealedWith: self.participants[id]?.sealing?.id
                    )
                )
            }
            try await self.switchService.endSnapshot(vms: run.machine.vms)
            self.logger.info(
                "Snapshot images durable",
                metadata: ["snapshot.id": "\(id)", "snapshot.vms": "\(vms.count)"]
            )
            return .success(try ParticipantReport(peer: self.config.peer.name, vms: vms).encoded())
        } catch {
            if self.participants[id]?.ended != nil {
                // Aborted under it: what it wrote since the abort's clean-up goes too.
                self.logger.info("Snapshot images abandoned (aborted)", metadata: ["snapshot.id": "\(id)"])
                await self.discardFiles(id, stores: self.storeNames(id))
            } else {
                self.logger.error(
                    "Snapshot images failed",
                    metadata: [
                        "snapshot.id": "\(id)", "snapshot.violin": "\(key.violin)", "snapshot.error": "\(error)",
                    ]
                )
            }
            return .failure(SnapshotError(.failed, "\(self.config.peer.name): \(error)"))
        }
    }

    /// Throws if snapshot `id` has ended here (aborted while its images were being made durable).
    private func checkNotEnded(_ id: UInt64) throws {
        guard self.participants[id]?.ended == nil else {
            throw SnapshotError(.failed, "snapshot \(id) was aborted: \(self.participants[id]?.abortReason ?? "?")")
        }
    }

    /// Durability has ended: the participant machine hears the report, or the failure.
    func imagesDurable(_ id: UInt64, _ outcome: Result<[UInt8], SnapshotError>) async {
        guard var current = self.participants[id] else { return }
        let directives: [SnapshotParticipant<Instant>.Directive]
        switch outcome {
        case .success(let report): directives = current.machine.imagesDurable(report: report, now: .now)
        case .failure(let error): directives = current.machine.localFailed(error.message, now: .now)
        }
        self.participants[id] = current
        await self.executeParticipant(id, directives)
    }

    /// Compresses and writes a channel log on the thread pool; returns its chunks.
    private static func writeChannelLog(_ frames: [[UInt8]], to store: LocalChunkStore) async throws
        -> [SnapshotManifest.ChunkDescriptor]
    {
        try await NIOThreadPool.singleton.runIfActive {
            try FileManager.default.createDirectory(atPath: store.directory, withIntermediateDirectories: true)
            var chunker = ImageChunker(chunkSize: 4 << 20)
            var chunks: [SnapshotManifest.ChunkDescriptor] = []
            for chunk in chunker.append(ChannelLogFormat.encode(frames)) {
                chunks.append(try store.write(index: chunk.index, raw: chunk.bytes))
            }
            if let last = chunker.finish() { chunks.append(try store.write(index: last.index, raw: last.bytes)) }
            return chunks
        }
    }

    func commitLocal(_ id: UInt64, document: [UInt8]) async {
        self.participants[id]?.ended = .now
        do {
            let manifest = try SnapshotManifest.decode(Data(document), source: "commit of snapshot \(id)")
            try await self.catalog.commit(manifest, document: Data(document))
            self.logger.info("Snapshot committed here", metadata: ["snapshot.id": "\(id)"])
        } catch {
            self.logger.error(
                "Cannot record a commit",
                metadata: ["snapshot.id": "\(id)", "snapshot.error": "\(error)"]
            )
        }
    }

    func abortLocal(_ id: UInt64, reason: SnapshotAbortReason) async {
        self.participants[id]?.ended = .now
        self.participants[id]?.abortReason = reason.message
        let vms = self.participants[id]?.machine.vms ?? []
        self.logger.warning(
            "Snapshot aborted here",
            metadata: ["snapshot.id": "\(id)", "snapshot.reason": "\(reason)"]
        )
        _ = try? await self.catalog.abort(id, reason: reason.message)
        await self.cleanUp(id, vms: vms)
    }

    /// Stops what runs for snapshot `id` here and deletes its partial files; every VM keeps running.
    func cleanUp(_ id: UInt64, vms: [String]) async {
        for (vm, writer) in self.participants[id]?.writers ?? [:] {
            writer.cancel()
            guard let monitor = await self.monitor(vm) else { continue }
            // A background snapshot (every mode but `precopy`) runs to its end into the discarding writer:
            // cancelling one half-way can leave the guest's memory write-protected, and the guest hung.
            if self.participants[id]?.plan.mode == .precopy,
                let (status, _) = try? await QEMUSnapshot.status(monitor),
                ["active", "setup", "pre-switchover", "device"].contains(status)
            {
                _ = try? await monitor.execute("migrate_cancel")
                // Let the cancellation finish before looking at the VM's state.
                for _ in 0..<100 {
                    guard let (now, _) = try? await QEMUSnapshot.status(monitor), now == "cancelling" else { break }
                    try? await Task.sleep(for: .milliseconds(10))
                }
            }
            // A migration that failed or was cancelled mid-way (or a pre-copy paused at its switch-over, or one
            // that finished) can leave the VM stopped: every VM keeps running after an abort.
            let state = (try? await monitor.execute("query-status"))?["status"]?.stringValue
            if let state, ["paused", "postmigrate", "finish-migrate"].contains(state) {
                _ = try? await monitor.execute("cont")
            }
        }
        self.participants[id]?.writers = [:]
        self.participants[id]?.uploaders = [:]
        try? await self.switchService.endSnapshot(vms: vms)
        // The files and the replicas sealed on stores go in the background (unsealed ones the stores abandon by
        // themselves): the stores may take seconds to answer.
        let stores = self.storeNames(id)
        self.spawn({ await self.discardFiles(id, stores: stores) }) { _ in }
    }

    /// The stores snapshot `id`'s images here went to.
    private func storeNames(_ id: UInt64) -> Set<String> {
        Set((self.participants[id]?.stores.values.flatMap { $0 } ?? []).map(\.name))
    }

    /// Removes snapshot `id`'s files here and drops its replicas sealed on `stores`.
    private func discardFiles(_ id: UInt64, stores: Set<String>) async {
        await Self.removeFiles(self.directory(id))
        _ = await self.dropReplicas(snapshot: id, on: stores)
    }

    /// Removes snapshot `id`'s files and rows here.
    func deleteLocally(_ id: UInt64) async {
        _ = try? await self.catalog.delete(id)
        await Self.removeFiles(self.directory(id))
        // Its disk layers are merged away on the next housekeeping.
        self.lastDiskPass = nil
    }

    /// Removes a directory tree on the thread pool (an image can be hundreds of files).
    static func removeFiles(_ path: String) async {
        try? await NIOThreadPool.singleton.runIfActive { try FileManager.default.removeItem(atPath: path) }
    }
}
