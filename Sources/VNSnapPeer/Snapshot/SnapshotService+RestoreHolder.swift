import Foundation
import Logging
import NIOPosix
import VNSnapCore
import VNSnapHypervisor
import VNSnapImage

/// A restore as a peer holding VMs of the snapshot carries out each step: verify its images (fetching what
/// lives on store peers, and whole images of a lost peer's VMs placed here), load a new QEMU per VM beside the
/// running one, pause the running ones, switch over and resume — or roll back (issue 13: a restore is a
/// transaction; until the switch-over the running VMs are untouched or only paused).
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
            if step == .rollback {
                let problems = await self.rollBack(run)
                guard problems.isEmpty else { throw SnapshotError(.failed, problems.joined(separator: "; ")) }
                return .restoreAnswer(run: run, step: step, ok: true, reason: "", blob: [])
            }
            guard self.holding[run]?.rolledBack != true else {
                throw SnapshotError(.failed, "restore \(run) was rolled back here")
            }
            guard let manifest = try await self.catalog.entry(key.id)?.manifest else {
                throw SnapshotError(.notFound, "\(self.config.peer.name) has no manifest of snapshot \(key.id)")
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
                    let staged = try await self.stage(manifest, vm: vm.name)
                    self.holding[run]?.staged[vm.name] = staged
                    timings.milliseconds[vm.name] = started.duration(to: .now).inSeconds * 1000
                }
            case .pause:
                for vm in local {
                    let started = ContinuousClock.now
                    // A lost peer's VM has no running copy here; the others pause, reversibly.
                    if let monitor = await self.monitor(vm.name) {
                        _ = try await monitor.execute("stop")
                        self.holding[run]?.paused.append(vm.name)
                    }
                    timings.milliseconds[vm.name] = started.duration(to: .now).inSeconds * 1000
                }
            case .resume:
                try await self.switchOver(
                    run,
                    manifest: manifest,
                    vms: local.map(\.name),
                    replay: replay,
                    into: &timings
                )
                self.logger.info("Restore resumed the VMs", metadata: ["snapshot.id": "\(key.id)"])
            case .rollback:
                break  // handled above
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

    /// The switch-over: each old VM stops and its staged machine takes its place (disk record, adoption,
    /// switch epoch), the channel logs go in first, then every VM resumes, back to back.
    private func switchOver(
        _ run: UInt64,
        manifest: SnapshotManifest,
        vms: [String],
        replay: Bool,
        into timings: inout RestoreTimings
    ) async throws {
        guard let holding = self.holding[run] else { throw SnapshotError(.notFound, "restore \(run) is unknown here") }
        let missing = vms.filter { holding.staged[$0] == nil }
        guard missing.isEmpty else {
            throw SnapshotError(
                .notFound,
                "no VM loaded here for \(missing.joined(separator: ", ")) (was the load step lost?)"
            )
        }
        self.holding[run]?.switchedOver = true
        for vm in vms {
            let staged = holding.staged[vm]!  // !-safe, checked above
            if let adopting = staged.adopting {
                try self.hosted.adopt(adopting)
                self.logger.notice(
                    "VM of a lost peer adopted",
                    metadata: ["vm.name": "\(vm)", "snapshot.id": "\(manifest.id)"]
                )
            }
            if let overlay = staged.overlay, let configured = self.hosted.definition(vm)?.disk {
                try DiskLayers(config: self.config).setActive(overlay, vm: vm, configured: configured)
            }
            try await self.supervisor.promote(vm, staged.machine)
            try await self.switchService.setEpoch(vm, epoch: manifest.epoch)
            self.holding[run]?.staged[vm] = nil
        }
        for vm in vms {
            let frames = replay ? (holding.staged[vm]?.frames ?? []) : []
            try await self.switchService.inject(vm, frames: frames)
            timings.injected[vm] = frames.count
        }
        // Resume them back to back, so the group starts within a few milliseconds.
        for vm in vms {
            let started = ContinuousClock.now
            guard let monitor = await holding.staged[vm]?.machine.monitor else {
                throw SnapshotError(.failed, "VM \(vm) is not running after its load")
            }
            _ = try await monitor.execute("cont")
            timings.milliseconds[vm] = started.duration(to: .now).inSeconds * 1000
        }
        self.holding[run]?.paused = []
        await self.applyDeferredDeletes()
    }

    /// Undoes `load` and `pause` of restore `run` here, once no step of it is running: the staged machines are
    /// stopped (their overlays removed), the paused VMs resumed. Returns what could not be put back.
    func rollBack(_ run: UInt64) async -> [String] {
        self.holding[run, default: HolderRestore()].rolledBack = true
        while self.holding[run]?.running.subtracting([.rollback]).isEmpty == false, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(50))
        }
        guard let holding = self.holding[run], !holding.switchedOver else {
            return self.holding[run]?.switchedOver == true
                ? ["\(self.config.peer.name): restore \(run) had already switched over here"] : []
        }
        var problems: [String] = []
        for (vm, staged) in holding.staged.sorted(by: { $0.key < $1.key }) {
            await self.supervisor.discard(staged.machine)
            if let overlay = staged.overlay { try? FileManager.default.removeItem(atPath: overlay.path) }
            self.holding[run]?.staged[vm] = nil
        }
        for vm in holding.paused {
            do {
                guard let monitor = await self.monitor(vm) else { throw SnapshotError(.failed, "it is not running") }
                _ = try await monitor.execute("cont")
            } catch {
                problems.append("\(self.config.peer.name): \(vm) could not be resumed: \(error)")
            }
        }
        self.holding[run]?.paused = []
        if !holding.staged.isEmpty || !holding.paused.isEmpty {
            self.logger.notice(
                "Restore rolled back: the running VMs go on as they were",
                metadata: [
                    "restore.run": "\(run)", "restore.discarded": "\(holding.staged.keys.sorted())",
                    "restore.resumed": "\(holding.paused)",
                ]
            )
        }
        await self.applyDeferredDeletes()
        return problems
    }

    /// Whether this peer can run `entry`, a VM of a lost peer: its definition is recorded, its VIOLIN is known
    /// here, and no configured VM has its name.
    private func checkAdoptable(_ entry: SnapshotManifest.VM, manifest: SnapshotManifest) throws {
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
        if self.hosted.definition(entry.name) != nil, !self.hosted.isAdopted(entry.name) {
            throw SnapshotError(
                .refused,
                "\(label): \(self.config.peer.name) already runs a configured VM of that name"
            )
        }
    }

    /// The image and channel log of `vm`, as this peer holds them, checked against the manifest.
    private func heldImages(_ manifest: SnapshotManifest, vm: String) async throws -> (
        memory: (SnapshotCatalog.HeldImage, LocalChunkStore), channel: (SnapshotCatalog.HeldImage, LocalChunkStore)
    ) {
        let label = "snapshot \(manifest.id), VM \(vm)"
        guard let memory = try await self.catalog.image(snapshot: manifest.id, vm: vm, kind: .memory),
            let channel = try await self.catalog.image(snapshot: manifest.id, vm: vm, kind: .channel)
        else { throw ImageError(.missing, "\(label): this peer holds no image of it") }
        return (
            (memory, LocalChunkStore(directory: memory.directory, label: label)),
            (channel, LocalChunkStore(directory: channel.directory, label: label + ", channel log"))
        )
    }

    private func verify(_ manifest: SnapshotManifest, vm: String) async throws {
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

    /// A fresh overlay on the snapshot's frozen disk of `vm`, or `nil` when the snapshot holds no disk of it. It
    /// becomes the VM's recorded disk only at the switch-over.
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
        return overlay
    }

    /// Starts a new QEMU for `vm` beside the running one, paused, and loads it from its verified image; the
    /// running VM is not touched. Returns it with its channel log.
    private func stage(_ manifest: SnapshotManifest, vm: String) async throws -> StagedVM {
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
