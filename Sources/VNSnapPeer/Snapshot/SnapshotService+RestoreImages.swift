import Foundation
import Logging
import NIOPosix
import VNSnapCore
import VNSnapHypervisor
import VNSnapImage

/// A restore holder's images: whether a VM can be taken over here, its chunks verified against the manifest, the
/// disk it restores onto, and the machine loaded beside the running one from them.
extension SnapshotService {
    /// Whether this peer can run `entry`, a VM restored away from the peer it ran on: its definition is recorded,
    /// its VIOLIN is known here, and no configured VM has its name (unless it is that VM, coming back).
    func checkAdoptable(_ entry: SnapshotManifest.VM, manifest: SnapshotManifest) throws {
        let label = "snapshot \(manifest.id), VM \(entry.name) (from \(entry.peer))"
        guard let definition = entry.definition else {
            throw SnapshotError(.refused, "\(label): the snapshot does not record the VM's definition")
        }
        guard self.config.violin(named: definition.violin) != nil else {
            throw SnapshotError(
                .refused,
                "\(label): VIOLIN \(definition.violin) is not defined on \(self.config.peer.name)"
            )
        }
        if let configured = self.hosted.definition(entry.name), !self.hosted.isAdopted(entry.name) {
            // Its own configured VM coming back (it had moved away): the same VM, by its MAC.
            if self.supervisor.hasMoved(entry.name), configured.mac == definition.mac { return }
            throw SnapshotError(
                .refused,
                "\(label): \(self.config.peer.name) already runs a configured VM of that name"
            )
        }
    }

    /// The image and channel log of `vm`, as this peer holds them, checked against the manifest.
    func heldImages(_ manifest: SnapshotManifest, vm: String) async throws -> (
        memory: (SnapshotCatalog.HeldImage, LocalChunkStore), channel: (SnapshotCatalog.HeldImage, LocalChunkStore)
    ) {
        let label = "snapshot \(manifest.id), VM \(vm)"
        guard let memory = try await self.catalog.image(snapshot: manifest.id, vm: vm, kind: .memory),
            let channel = try await self.catalog.image(snapshot: manifest.id, vm: vm, kind: .channel)
        else { throw ImageError(.missing, "\(label): this peer holds no image of it") }
        // Snapshots written before sealing at rest have no key id: their chunks are read unsealed.
        let required = manifest.vms.first { $0.name == vm }?.sealedWith != nil
        let (sealed, channelSealed) = (
            self.chunkCipher(manifest.id, vm: vm, kind: .memory, requireSealed: required),
            self.chunkCipher(manifest.id, vm: vm, kind: .channel, requireSealed: required)
        )
        return (
            (memory, LocalChunkStore(directory: memory.directory, label: label, cipher: sealed)),
            (
                channel,
                LocalChunkStore(directory: channel.directory, label: label + ", channel log", cipher: channelSealed)
            )
        )
    }

    func verify(_ manifest: SnapshotManifest, vm: String) async throws {
        guard let entry = manifest.vms.first(where: { $0.name == vm }),
            let log = manifest.channels.first(where: { $0.vm == vm })
        else { throw SnapshotError(.notFound, "snapshot \(manifest.id) has no VM \(vm)") }
        if entry.peer != self.config.peer.name {
            // A lost peer's VM placed here: its images come whole from their replicas.
            try self.checkAdoptable(entry, manifest: manifest)
            let directory = "\(self.directory(manifest.id))/\(vm)"
            try await self.fetchWhole(manifest, vm: vm, kind: .memory, directory: directory + "/memory")
            try await self.fetchWhole(manifest, vm: vm, kind: .channel, directory: directory + "/channel")
        }
        let (memory, channel) = try await self.heldImages(manifest, vm: vm)
        // Memory targets: the image lives on store peers; bring its chunks here first (verified below).
        try await self.fetchMissing(manifest, vm: vm, kind: .memory, into: memory.1)
        let label = "snapshot \(manifest.id), VM \(vm)"
        let configured = (self.hosted.definition(vm) ?? entry.definition)?.disk
        if entry.disk == nil, configured != nil {
            throw SnapshotError(
                .refused,
                "\(label): the VM has a disk but the snapshot holds none (taken before the disk was added); restoring would pair its memory with today's disk"
            )
        }
        if entry.disk != nil, configured == nil {
            throw SnapshotError(
                .refused,
                "\(label): the snapshot holds a disk of the VM, but no disk is configured for it now"
            )
        }
        let directory = DiskLayers(config: self.config).directory(vm)
        try await NIOThreadPool.singleton.runIfActive {
            try ImageStreamFeeder.verify(memory.0.chunks, against: entry.image, in: memory.1)
            try ImageStreamFeeder.verify(channel.0.chunks, against: log.image, in: channel.1)
            try Self.verifyDisk(entry, directory: directory, label: label)
        }
    }

    /// A fresh overlay on the snapshot's frozen disk of `vm`, or `nil` when the snapshot holds no disk of it. It
    /// becomes the VM's recorded disk only at the switch-over.
    func restoredDisk(_ entry: SnapshotManifest.VM, id: UInt64) async throws -> VMDefinition.Disk? {
        guard let frozen = entry.disk?.first else { return nil }
        let layers = DiskLayers(config: self.config)
        let overlay = VMDefinition.Disk(path: layers.newOverlay(entry.name, label: "restore-\(id)"), format: "qcow2")
        try await NIOThreadPool.singleton.runIfActive {
            try QEMUDisk.createOverlay(
                at: overlay.path,
                on: VMDefinition.Disk(path: frozen.path, format: frozen.format)
            )
        }
        return overlay
    }

    /// Starts a new QEMU for `vm` beside the running one, paused, and loads it from its verified image; the
    /// running VM is not touched. Returns it with its channel log.
    func stage(_ manifest: SnapshotManifest, vm: String) async throws -> StagedVM {
        guard let entry = manifest.vms.first(where: { $0.name == vm }),
            let log = manifest.channels.first(where: { $0.vm == vm })
        else { throw SnapshotError(.notFound, "snapshot \(manifest.id) has no VM \(vm)") }
        let (memory, channel) = try await self.heldImages(manifest, vm: vm)
        let frames = try await NIOThreadPool.singleton.runIfActive {
            try ImageStreamFeeder.checkList(memory.0.chunks, against: entry.image, label: memory.1.label)
            try ImageStreamFeeder.checkList(channel.0.chunks, against: log.image, label: channel.1.label)
            var bytes: [UInt8] = []
            for chunk in channel.0.chunks { bytes += try channel.1.read(chunk) }
            return try ChannelLogFormat.decode(bytes, label: channel.1.label)
        }
        // A lost peer's VM placed here: its switch port now (idempotent), its adoption at the switch-over.
        var adopting: VMDefinition?
        if self.hosted.definition(vm) == nil || self.hosted.isAdopted(vm), entry.peer != self.config.peer.name,
            let definition = entry.definition
        {
            try self.checkAdoptable(entry, manifest: manifest)
            try await self.switchService.addPort(PeerDaemon.portSpec(self.config, definition))
            adopting = self.hosted.definition(vm) == nil ? definition : nil
        }
        let disk = try await self.restoredDisk(entry, id: manifest.id)
        let machine: QEMUMachine
        do {
            machine = try await self.supervisor.stage(vm, disk: disk, definition: adopting ?? entry.definition)
        } catch {
            if let disk { try? FileManager.default.removeItem(atPath: disk.path) }
            throw error
        }
        do {
            guard let monitor = await machine.monitor else {
                throw SnapshotError(.failed, "VM \(vm): no monitor after start")
            }
            let socket = "\((machine.staging ?? machine.paths).qmpSocket).incoming"
            try? FileManager.default.removeItem(atPath: socket)
            try await QEMUSnapshot.restore(monitor, uri: "unix:\(socket)")
            try await NIOThreadPool.singleton.runIfActive {
                try ImageStreamFeeder.feed(memory.0.chunks, from: memory.1, to: socket)
            }
            try await QEMUSnapshot.waitCompleted(monitor, timeout: .seconds(300))
            try? FileManager.default.removeItem(atPath: socket)
            let state = try await monitor.execute("query-status")["status"]?.stringValue ?? "unknown"
            guard state == "paused" || state == "prelaunch" else {
                throw SnapshotError(.failed, "VM \(vm) is \(state) after loading its image, not paused")
            }
        } catch {
            await self.supervisor.discard(machine)
            if let disk { try? FileManager.default.removeItem(atPath: disk.path) }
            throw error
        }
        return StagedVM(machine: machine, overlay: disk, adopting: adopting, frames: frames)
    }
}
