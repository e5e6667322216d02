import Foundation
import Logging
import NIOPosix
import VNSnapCore
import VNSnapHypervisor
import VNSnapImage

/// A restore as the restorer drives it.
struct RestoreRun {
    var coordinator: RestoreCoordinator<ContinuousClock.Instant>
    var blobs: [RestoreStep: [PeerID: [UInt8]]] = [:]
    var failure: String?
    var progress: (@Sendable (String) async -> Void)?
}

/// A restore as a peer holding VMs of the snapshot carries it out.
struct HolderRestore {
    var answers: [RestoreStep: SnapshotMessage.Body] = [:]
    var running: Set<RestoreStep> = []
    /// The channel logs to re-inject on resume, by VM.
    var frames: [String: [[UInt8]]] = [:]
    var at = ContinuousClock.now
}

/// Per-VM restore timings, sent back with each step's answer.
public struct RestoreTimings: Sendable, Codable, Hashable {
    /// Milliseconds per VM for the step.
    public var milliseconds: [String: Double]
    /// Frames re-injected per VM (resume step).
    public var injected: [String: Int]
}

extension SnapshotService {
    /// Restores snapshot `id`: verify everywhere, load everywhere, resume everywhere. Throws with the step and
    /// the reason; a failure in `verify` has touched no VM.
    public func restore(
        _ id: UInt64,
        replay: Bool = true,
        progress: @escaping @Sendable (String) async -> Void
    ) async throws -> [RestoreStep: [String: RestoreTimings]] {
        guard let entry = try self.catalog.entry(id), entry.state == "committed", let manifest = entry.manifest else {
            throw SnapshotError("no committed snapshot \(id) in this peer's catalog (see `vnsnap-peer list`)")
        }
        let view = try await self.membership.view()
        var holders: [PeerID: String] = [:]
        for vm in manifest.vms {
            let peer = PeerID(name: vm.peer)
            guard view.alive[peer] != nil else {
                throw SnapshotError(
                    "peer \(vm.peer), which holds VM \(vm.name) of snapshot \(id), is not alive; nothing was touched"
                )
            }
            holders[peer] = vm.peer
        }
        let run = UInt64.random(in: 1...UInt64(Int64.max))
        let key = SnapshotKey(id: id, violin: manifest.violin, epoch: manifest.epoch, term: view.term)
        let coordinator = RestoreCoordinator<Instant>(
            key: key,
            run: run,
            me: self.me,
            holders: Set(holders.keys),
            replay: replay,
            now: .now
        )
        self.restores[run] = RestoreRun(coordinator: coordinator, progress: progress)
        self.logger.info("Restore started", metadata: ["snapshot.id": "\(id)", "restore.run": "\(run)"])
        await progress("verifying every chunk on \(holders.values.sorted().joined(separator: ", "))")
        await self.executeRestore(run, coordinator.start())
        while let current = self.restores[run], current.failure == nil, !current.coordinator.succeeded {
            try? await Task.sleep(for: .milliseconds(10))
        }
        guard let done = self.restores.removeValue(forKey: run) else { throw SnapshotError("restore \(run) vanished") }
        if let failure = done.failure { throw SnapshotError(failure) }
        var timings: [RestoreStep: [String: RestoreTimings]] = [:]
        for (step, answers) in done.blobs {
            for (peer, blob) in answers {
                timings[step, default: [:]][holders[peer] ?? "\(peer)"] = try? JSONDecoder().decode(
                    RestoreTimings.self,
                    from: Data(blob)
                )
            }
        }
        return timings
    }

    func executeRestore(_ run: UInt64, _ directives: [RestoreCoordinator<Instant>.Directive]) async {
        for directive in directives {
            switch directive {
            case .send(let message, let peer):
                await self.membership.send(snapshot: message, to: peer)
            case .stepDone(let step, let blobs):
                self.restores[run]?.blobs[step] = blobs
                let next: String? =
                    switch step {
                    case .verify: "every chunk verified; stopping the VMs and loading them paused"
                    case .load: "every VM loaded and paused; resuming them together"
                    case .resume: nil
                    }
                if let next, let progress = self.restores[run]?.progress { await progress(next) }
            case .failed(let step, let reason):
                self.restores[run]?.failure = "restore failed in step \(step): \(reason)"
            }
        }
    }

    func tickRestores(now: ContinuousClock.Instant) async {
        for run in Array(self.restores.keys) {
            guard var current = self.restores[run] else { continue }
            let directives = current.coordinator.onTick(now: now)
            self.restores[run] = current
            await self.executeRestore(run, directives)
        }
        for (run, holding) in self.holding where holding.at.duration(to: now) > .seconds(3600) {
            self.holding[run] = nil
        }
    }

    func restoreMessage(_ message: SnapshotMessage) async {
        switch message.body {
        case .restoreAnswer(let run, _, _, _, _):
            guard var current = self.restores[run] else { return }
            let directives = current.coordinator.onMessage(message, now: .now)
            self.restores[run] = current
            await self.executeRestore(run, directives)
        case .restore(let run, let step, let replay):
            if let answer = self.holding[run]?.answers[step] {
                return await self.membership.send(
                    snapshot: SnapshotMessage(key: message.key, from: self.me, body: answer),
                    to: message.from
                )
            }
            if self.holding[run]?.running.contains(step) == true { return }
            self.holding[run, default: HolderRestore()].running.insert(step)
            Task {
                let body = await self.carryOut(step, run: run, key: message.key, replay: replay)
                await self.finishStep(run, step: step, body: body, key: message.key, to: message.from)
            }
        default:
            break
        }
    }

    private func finishStep(_ run: UInt64, step: RestoreStep, body: SnapshotMessage.Body, key: SnapshotKey, to: PeerID)
        async
    {
        self.holding[run]?.running.remove(step)
        self.holding[run]?.answers[step] = body
        await self.membership.send(snapshot: SnapshotMessage(key: key, from: self.me, body: body), to: to)
    }

    /// One step for this peer's VMs of the snapshot.
    private func carryOut(_ step: RestoreStep, run: UInt64, key: SnapshotKey, replay: Bool) async
        -> SnapshotMessage.Body
    {
        do {
            guard let manifest = try self.catalog.entry(key.id)?.manifest else {
                throw SnapshotError("\(self.config.peer.name) has no manifest of snapshot \(key.id)")
            }
            let local = manifest.vms.filter { $0.peer == self.config.peer.name }
            var timings = RestoreTimings(milliseconds: [:], injected: [:])
            switch step {
            case .verify:
                for vm in local {
                    let started = ContinuousClock.now
                    try await self.verify(manifest, vm: vm.name)
                    timings.milliseconds[vm.name] = started.duration(to: .now).inSeconds * 1000
                }
            case .load:
                for vm in local {
                    let started = ContinuousClock.now
                    self.holding[run]?.frames[vm.name] = try await self.load(manifest, vm: vm.name)
                    timings.milliseconds[vm.name] = started.duration(to: .now).inSeconds * 1000
                }
            case .resume:
                for vm in local {
                    let frames = replay ? (self.holding[run]?.frames[vm.name] ?? []) : []
                    try await self.switchService.inject(vm.name, frames: frames)
                    timings.injected[vm.name] = frames.count
                }
                // Resume them back to back, so the group starts within a few milliseconds.
                for vm in local {
                    let started = ContinuousClock.now
                    guard let monitor = await self.monitor(vm.name) else {
                        throw SnapshotError("VM \(vm.name) is not running after its load")
                    }
                    _ = try await monitor.execute("cont")
                    timings.milliseconds[vm.name] = started.duration(to: .now).inSeconds * 1000
                }
                self.logger.info("Restore resumed the VMs", metadata: ["snapshot.id": "\(key.id)"])
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return .restoreAnswer(run: run, step: step, ok: true, reason: "", blob: Array(try encoder.encode(timings)))
        } catch {
            self.logger.error(
                "Restore step failed",
                metadata: ["snapshot.id": "\(key.id)", "restore.step": "\(step)", "restore.error": "\(error)"]
            )
            return .restoreAnswer(
                run: run,
                step: step,
                ok: false,
                reason: "\(self.config.peer.name): \(error)",
                blob: []
            )
        }
    }

    /// The image and channel log of `vm`, as this peer holds them, checked against the manifest.
    private func heldImages(_ manifest: SnapshotManifest, vm: String) throws -> (
        memory: (SnapshotCatalog.HeldImage, LocalChunkStore), channel: (SnapshotCatalog.HeldImage, LocalChunkStore)
    ) {
        let label = "snapshot \(manifest.id), VM \(vm)"
        guard let memory = try self.catalog.image(snapshot: manifest.id, vm: vm, kind: .memory),
            let channel = try self.catalog.image(snapshot: manifest.id, vm: vm, kind: .channel)
        else { throw ImageError(.missing, "\(label): this peer holds no image of it") }
        return (
            (memory, LocalChunkStore(directory: memory.directory, label: label)),
            (channel, LocalChunkStore(directory: channel.directory, label: label + ", channel log"))
        )
    }

    private func verify(_ manifest: SnapshotManifest, vm: String) async throws {
        guard let entry = manifest.vms.first(where: { $0.name == vm }),
            let log = manifest.channels.first(where: { $0.vm == vm })
        else { throw SnapshotError("snapshot \(manifest.id) has no VM \(vm)") }
        let (memory, channel) = try self.heldImages(manifest, vm: vm)
        // Memory targets: the image lives on store peers; bring its chunks here first (verified below).
        try await self.fetchMissing(manifest, vm: vm, kind: .memory, into: memory.1)
        let label = "snapshot \(manifest.id), VM \(vm)"
        let configured = self.config.vms.first(where: { $0.name == vm })?.disk
        if entry.disk == nil, configured != nil {
            throw SnapshotError(
                "\(label): the VM has a disk but the snapshot holds none (taken before the disk was added); restoring would pair its memory with today's disk"
            )
        }
        if entry.disk != nil, configured == nil {
            throw SnapshotError("\(label): the snapshot holds a disk of the VM, but no disk is configured for it now")
        }
        try await NIOThreadPool.singleton.runIfActive {
            try ImageStreamFeeder.verify(memory.0.chunks, against: entry.image, in: memory.1)
            try ImageStreamFeeder.verify(channel.0.chunks, against: log.image, in: channel.1)
            for (index, layer) in (entry.disk ?? []).enumerated() {
                let found = try FileDigest.of(layer.path, label: "\(label), disk layer \(index)")
                guard found.bytes == layer.bytes, found.digest == layer.digest else {
                    throw ImageError(
                        .corrupt,
                        "\(label), disk layer \(index): \(layer.path) does not match its digest (\(found.bytes) bytes, \(layer.bytes) committed)"
                    )
                }
            }
            // The files below the frozen image, as its own header names them, against the committed digest.
            if let frozen = entry.disk?.first {
                let backing = try QEMUDisk.chain(ofFile: frozen.path).dropFirst().map { file in
                    let found = try FileDigest.of(file.path, label: "\(label), disk backing file")
                    return SnapshotManifest.DiskLayer(
                        path: file.path,
                        format: file.format,
                        bytes: found.bytes,
                        digest: found.digest
                    )
                }
                let digest =
                    backing.isEmpty ? nil : LocalChunkStore.hash(SnapshotManifest.DiskBacking.digestInput(backing))
                guard digest == entry.diskBacking?.digest, backing.count == entry.diskBacking?.files ?? 0 else {
                    throw ImageError(
                        .corrupt,
                        "\(label): the backing files of its frozen disk (\(backing.map(\.path).joined(separator: ", "))) do not match the snapshot's digest"
                    )
                }
            }
        }
    }

    /// A fresh overlay on the snapshot's frozen disk of `vm` (recorded as the disk it runs on), or `nil` when
    /// the snapshot holds no disk of it.
    private func restoredDisk(_ entry: SnapshotManifest.VM, id: UInt64) async throws -> VMDefinition.Disk? {
        guard let frozen = entry.disk?.first else { return nil }
        let layers = DiskLayers(config: self.config)
        let overlay = VMDefinition.Disk(path: layers.newOverlay(entry.name, label: "restore-\(id)"), format: "qcow2")
        try await NIOThreadPool.singleton.runIfActive {
            try QEMUDisk.createOverlay(
                at: overlay.path,
                on: VMDefinition.Disk(path: frozen.path, format: frozen.format)
            )
        }
        // verify refused a snapshot with a disk for a VM configured without one.
        if let configured = self.config.vms.first(where: { $0.name == entry.name })?.disk {
            try layers.setActive(overlay, vm: entry.name, configured: configured)
        }
        return overlay
    }

    /// Stops `vm`, starts it paused from its verified image, sets its switch epoch; returns its channel log.
    private func load(_ manifest: SnapshotManifest, vm: String) async throws -> [[UInt8]] {
        guard let entry = manifest.vms.first(where: { $0.name == vm }),
            let log = manifest.channels.first(where: { $0.vm == vm })
        else { throw SnapshotError("snapshot \(manifest.id) has no VM \(vm)") }
        let (memory, channel) = try self.heldImages(manifest, vm: vm)
        let frames = try await NIOThreadPool.singleton.runIfActive {
            try ImageStreamFeeder.checkList(memory.0.chunks, against: entry.image, label: memory.1.label)
            try ImageStreamFeeder.checkList(channel.0.chunks, against: log.image, label: channel.1.label)
            var bytes: [UInt8] = []
            for chunk in channel.0.chunks { bytes += try channel.1.read(chunk) }
            return try ChannelLogFormat.decode(bytes, label: channel.1.label)
        }
        let disk = try await self.restoredDisk(entry, id: manifest.id)
        let machine = try await self.supervisor.restart(vm, forIncoming: true, disk: disk)
        guard let monitor = await machine.monitor else { throw SnapshotError("VM \(vm): no monitor after restart") }
        let socket = "\(self.config.vmDirectory(vm))/incoming.sock"
        try? FileManager.default.removeItem(atPath: socket)
        try await QEMUSnapshot.restore(monitor, uri: "unix:\(socket)")
        try await NIOThreadPool.singleton.runIfActive {
            try ImageStreamFeeder.feed(memory.0.chunks, from: memory.1, to: socket)
        }
        try await QEMUSnapshot.waitCompleted(monitor, timeout: .seconds(300))
        let state = try await monitor.execute("query-status")["status"]?.stringValue ?? "unknown"
        guard state == "paused" || state == "prelaunch" else {
            throw SnapshotError("VM \(vm) is \(state) after loading its image, not paused")
        }
        try await self.switchService.setEpoch(vm, epoch: manifest.epoch)
        return frames
    }
}
