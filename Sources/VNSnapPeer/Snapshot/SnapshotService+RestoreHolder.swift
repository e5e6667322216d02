import Foundation
import Logging
import NIOPosix
import VNSnapCore
import VNSnapHypervisor
import VNSnapImage

/// A restore as a peer holding VMs of the snapshot carries out each step: verify its images (fetching what
/// lives on store peers, and whole images of a lost peer's VMs placed here), load its VMs paused, resume them.
extension SnapshotService {
    /// One step for this peer's VMs of the snapshot.
    func carryOut(
        _ step: RestoreStep,
        run: UInt64,
        key: SnapshotKey,
        replay: Bool,
        moved: [String: PeerID]
    ) async -> SnapshotMessage.Body {
        do {
            guard let manifest = try self.catalog.entry(key.id)?.manifest else {
                throw SnapshotError("\(self.config.peer.name) has no manifest of snapshot \(key.id)")
            }
            let local = manifest.vms.filter { (moved[$0.name] ?? PeerID(name: $0.peer)) == self.me }
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

    /// Whether this peer can run `entry`, a VM of a lost peer: its definition is recorded, its VIOLIN is known
    /// here, and no configured VM has its name.
    private func checkAdoptable(_ entry: SnapshotManifest.VM, manifest: SnapshotManifest) throws {
        let label = "snapshot \(manifest.id), VM \(entry.name) (from \(entry.peer))"
        guard let definition = entry.definition else {
            throw SnapshotError("\(label): the snapshot does not record the VM's definition")
        }
        guard self.config.violin(named: definition.violin) != nil else {
            throw SnapshotError("\(label): VIOLIN \(definition.violin) is not defined on \(self.config.peer.name)")
        }
        if self.hosted.definition(entry.name) != nil, !self.hosted.isAdopted(entry.name) {
            throw SnapshotError("\(label): \(self.config.peer.name) already runs a configured VM of that name")
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
        if entry.peer != self.config.peer.name {
            // A lost peer's VM placed here: its images come whole from their replicas.
            try self.checkAdoptable(entry, manifest: manifest)
            let directory = "\(self.directory(manifest.id))/\(vm)"
            try await self.fetchWhole(manifest, vm: vm, kind: .memory, directory: directory + "/memory")
            try await self.fetchWhole(manifest, vm: vm, kind: .channel, directory: directory + "/channel")
        }
        let (memory, channel) = try self.heldImages(manifest, vm: vm)
        // Memory targets: the image lives on store peers; bring its chunks here first (verified below).
        try await self.fetchMissing(manifest, vm: vm, kind: .memory, into: memory.1)
        let label = "snapshot \(manifest.id), VM \(vm)"
        let configured = (self.hosted.definition(vm) ?? entry.definition)?.disk
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
        if let configured = self.hosted.definition(entry.name)?.disk {
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
        // A lost peer's VM placed here: this peer runs it from now on (recorded first, then its switch port).
        var adopting: VMDefinition?
        if self.hosted.definition(vm) == nil, let definition = entry.definition {
            try self.checkAdoptable(entry, manifest: manifest)
            try self.hosted.adopt(definition)
            try await self.switchService.addPort(PeerDaemon.portSpec(self.config, definition))
            adopting = definition
            self.logger.notice(
                "VM of a lost peer adopted",
                metadata: ["vm.name": "\(vm)", "vm.lostPeer": "\(entry.peer)", "snapshot.id": "\(manifest.id)"]
            )
        }
        let machine: QEMUMachine
        do {
            let disk = try await self.restoredDisk(entry, id: manifest.id)
            machine = try await self.supervisor.restart(vm, forIncoming: true, disk: disk, adopting: adopting)
        } catch {
            // Not started here: not adopted either (the next boot must not start it).
            if adopting != nil { self.hosted.release(vm) }
            throw error
        }
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
