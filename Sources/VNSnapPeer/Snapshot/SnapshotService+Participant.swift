import Foundation
import Logging
import NIOPosix
import VNSnapCore
import VNSnapCrypto
import VNSnapHypervisor
import VNSnapImage

/// The participant's side: prepare image writers and the switch, cut the local VMs, make their images and
/// channel logs durable, then commit or abort as the initiator says.
extension SnapshotService {
    func startParticipant(_ message: SnapshotMessage) async {
        let id = message.key.id
        if var run = self.participants[id] {
            let directives = run.machine.onMessage(message, now: .now)
            self.participants[id] = run
            return await self.executeParticipant(id, directives)
        }
        guard case .prepare(var plan) = message.body else { return }
        let view = try? await self.membership.view()
        guard SnapshotParticipant<Instant>.admits(message.key, highestTerm: view?.term ?? 0) else {
            self.logger.warning(
                "Snapshot prepare of a superseded term refused",
                metadata: ["snapshot.id": "\(id)", "snapshot.term": "\(message.key.term)"]
            )
            return
        }
        // This peer knows its own VMs of the VIOLIN; the plan names the participants.
        // Its VMs of the VIOLIN, but not those another peer owns now (moved: their copy here is stopped).
        plan.vms[self.me] = self.hosted.names(on: message.key.violin).filter { !self.supervisor.hasMoved($0) }
        let local = SnapshotMessage(key: message.key, from: message.from, body: .prepare(plan))
        let machine = SnapshotParticipant<Instant>(prepare: local, me: self.me, settings: self.settings)
        self.participants[id] = ParticipantRun(
            machine: machine,
            plan: plan,
            sealing: AtRestKeys(keyring: self.keyring(), clusterName: self.config.cluster.name).sealing(snapshot: id)
        )
        // A disk merge's copy under way stops before the cut freezes the disk (it goes on after the snapshot).
        await self.diskMerger.yield()
        await self.executeParticipant(id, machine.start())
    }

    func participantMessage(_ message: SnapshotMessage) async {
        let id = message.key.id
        // The first marker only (it is resent while images stream).
        if case .cut = message.body, [nil, .prepared].contains(self.participants[id]?.machine.phase) {
            self.logger.info(
                "Cut received",
                metadata: ["snapshot.id": "\(id)", "wall.us": "\(VMCutRunner.wallMicroseconds())"]
            )
        }
        guard var run = self.participants[id] else {
            // Unknown here (this peer restarted, or never prepared): an abort is answered so the initiator settles,
            // a new initiator's inquiry with what the catalog says, and a marker with a failure: a cut is only sent
            // to peers that prepared, so this one restarted since and its part of the snapshot is lost (without the
            // answer the initiator would wait for its images until the stream's deadline).
            var answer: SnapshotMessage.Body?
            switch message.body {
            case .abort: answer = .aborted
            case .cut:
                do {
                    if try await self.catalog.entry(id)?.state != "committed" {
                        answer = .failed(
                            "\(self.config.peer.name) has no record of snapshot \(id) (it restarted since it prepared)"
                        )
                    }
                } catch {
                    // The catalog unreadable: no answer (a failure would abort the snapshot everywhere).
                }
            case .inquire:
                let entry = try? await self.catalog.entry(id)
                answer = .holding(
                    entry?.state == "committed"
                        ? .committed(manifest: Array((try? entry?.manifest?.encoded()) ?? Data()))
                        : entry?.state == "aborted" ? .aborted : .nothing
                )
            default: break
            }
            if let answer {
                await self.membership.send(
                    snapshot: SnapshotMessage(key: message.key, from: self.me, body: answer),
                    to: message.from
                )
            }
            return
        }
        let directives = run.machine.onMessage(message, now: .now)
        self.participants[id] = run
        await self.executeParticipant(id, directives)
    }

    func executeParticipant(_ id: UInt64, _ directives: [SnapshotParticipant<Instant>.Directive]) async {
        for directive in directives {
            switch directive {
            case .send(let message, let peer):
                await self.membership.send(snapshot: message, to: peer)
            case .prepareLocal(let vms):
                self.spawn({ await self.prepareLocal(id, vms: vms) }) { failure in
                    await self.preparedLocally(id, vms: vms, failure: failure)
                }
            case .cutVMs(let vms):
                if self.participants[id]?.plan.mode == .loop {
                    self.cutOneAfterAnother(id, vms: vms)
                } else {
                    for vm in vms { self.cut(id, vm: vm) }
                }
            case .commitLocal(let document):
                await self.commitLocal(id, document: document)
            case .abortLocal(let reason):
                await self.abortLocal(id, reason: reason)
            case .declineTrigger(let vm):
                try? await self.switchService.cancelCut(vm)
                try? await self.switchService.releaseHeld(vm)
            case .scheduleTick(let at):
                self.participantTicks[id] = at
                self.schedule(at)
            }
        }
        await self.afterCut(id)
    }

    /// The local preparation has ended (`failure` says why not, if it failed).
    private func preparedLocally(_ id: UInt64, vms: [String], failure: String?) async {
        guard var run = self.participants[id] else { return }
        // Aborted while it prepared: what the preparation opened after the abort's clean-up goes too.
        if run.machine.phase == .aborted, failure == nil {
            return await self.cleanUp(id, vms: vms)
        }
        let next = run.machine.localPrepared(ok: failure == nil, reason: failure, now: .now)
        self.participants[id] = run
        await self.executeParticipant(id, next)
    }

    /// Opens an image writer per VM, configures QEMU for the mode and arms the switch; returns why not.
    private func prepareLocal(_ id: UInt64, vms: [String]) async -> String? {
        guard let run = self.participants[id] else { return "snapshot \(id) is gone" }
        let key = run.machine.key
        let mode = run.plan.mode
        do {
            try await self.catalog.begin(key, name: "", mode: mode, createdAtNanoseconds: Self.wallNanoseconds())
            let placement = try await self.placeReplicas(vms, target: run.plan.target)
            for vm in vms {
                guard let machine = await self.supervisor.machine(vm), let monitor = await machine.monitor else {
                    throw SnapshotError(.failed, "VM \(vm) is not running on \(self.config.peer.name)")
                }
                let directory = "\(self.directory(id))/\(vm)"
                try FileManager.default.createDirectory(
                    atPath: directory + "/memory",
                    withIntermediateDirectories: true
                )
                let socket = "\(self.directory(id))/\(vm).sock"
                guard socket.utf8.count < 100 else {
                    throw SnapshotError(
                        .refused,
                        "image socket path \(socket) is too long for a unix socket; use a shorter data_dir"
                    )
                }
                if let placed = placement[vm] {
                    // Memory target: straight into the stores' RAM, admitted there before any VM is cut.
                    let keyring = self.keyring()
                    let logger = self.logger
                    let (uploader, stores) = try await ReplicaUploader.open(
                        ReplicaKey(snapshot: id, vm: vm, kind: .memory),
                        reserve: self.replicaBytes(vm),
                        placement: placed,
                        secret: keyring.primary,
                        keys: { keyring.key(id: $0) }
                    ) { refusal in
                        logger.notice(
                            "A store refused a replica; trying the next",
                            metadata: ["snapshot.id": "\(id)", "vm.name": "\(vm)", "store.error": "\(refusal.message)"]
                        )
                    }
                    self.participants[id]?.stores[vm] = stores
                    self.participants[id]?.uploaders[vm] = uploader
                    do {
                        // Read before the assignment below, which holds `participants` exclusively.
                        let cipher = self.chunkCipher(id, vm: vm, kind: .memory)
                        // Kept at once, so a failure further on cancels it.
                        self.participants[id]?.writers[vm] = try ImageStreamWriter(
                            socketPath: socket,
                            store: uploader,
                            cipher: cipher,
                            readAhead: self.config.peer.imageReadAhead,
                            yielding: self.config.peer.imageLowPriority,
                            readBatch: self.config.peer.imageReadBatch
                        )
                    } catch {
                        uploader.abandon()
                        throw error
                    }
                } else {
                    let store = LocalChunkStore(directory: directory + "/memory", label: "snapshot \(id), VM \(vm)")
                    let cipher = self.chunkCipher(id, vm: vm, kind: .memory)  // before the assignment: see above
                    // Kept at once, so a failure further on cancels it (its thread waits in accept until then).
                    self.participants[id]?.writers[vm] = try ImageStreamWriter(
                        socketPath: socket,
                        store: store,
                        cipher: cipher,
                        readAhead: self.config.peer.imageReadAhead,
                        yielding: self.config.peer.imageLowPriority,
                        readBatch: self.config.peer.imageReadBatch
                    )
                }
                // QEMU's default cap (128 MiB/s) would make saving RAM the slowest part. `precopy` is a normal
                // migration that pauses before its switch-over, so the cut can finish while the VM is stopped.
                try await QEMUSnapshot.setParameters(
                    monitor,
                    ["max-bandwidth": Double(8 << 30), "downtime-limit": 300]
                )
                try await QEMUSnapshot.setCapabilities(
                    monitor,
                    ["background-snapshot": mode != .precopy, "pause-before-switchover": mode == .precopy]
                )
            }
            // Mode `loop` (the per-VM baseline) leaves the switch alone: no epochs, no channel state.
            if mode == .loop { try await self.switchService.measure(vms: vms) }
            let refused =
                mode == .loop
                ? [:]
                : try await self.switchService.arm(
                    vms: vms,
                    epoch: key.epoch,
                    policy: mode == .drop ? .drop : .trigger,
                    senders: run.plan.participants.subtracting([self.me])
                )
            if let (vm, reason) = refused.sorted(by: { $0.key < $1.key }).first {
                throw SnapshotError(.failed, "cannot arm the switch for \(vm): \(reason)")
            }
            return nil
        } catch {
            self.logger.error(
                "Snapshot prepare failed",
                metadata: ["snapshot.id": "\(id)", "snapshot.error": "\(error)"]
            )
            await self.cleanUp(id, vms: vms)
            return "\(self.config.peer.name): \(error)"
        }
    }

    /// Starts one VM's cut in the service's task group.
    private func cut(_ id: UInt64, vm: String) {
        self.participants[id]?.cutStarted[vm] = .now
        self.spawn({ await self.runCut(id, vm: vm) }) { outcome in await self.cutFinished(id, vm: vm, outcome) }
    }

    /// Mode `loop`: each VM's snapshot completes before the next one's begins, as a per-VM tool does it.
    private func cutOneAfterAnother(_ id: UInt64, vms: [String]) {
        guard let vm = vms.first else { return }
        self.participants[id]?.cutStarted[vm] = .now
        self.spawn({
            var outcome = await self.runCut(id, vm: vm)
            if case .success = outcome, let monitor = await self.monitor(vm) {
                do {
                    try await QEMUSnapshot.waitCompleted(monitor, timeout: self.settings.streamTimeout)
                } catch {
                    outcome = .failure(SnapshotAbortReason("\(vm): \(error)"))
                }
            }
            return outcome
        }) { outcome in
            await self.cutFinished(id, vm: vm, outcome)
            await self.cutOneAfterAnother(id, vms: Array(vms.dropFirst()))
        }
    }

    /// Runs one VM's cut with QMP and the switch.
    private func runCut(_ id: UInt64, vm: String) async -> Result<VMCutRunner.Outcome, SnapshotAbortReason> {
        guard let run = self.participants[id], let writer = run.writers[vm] else {
            return .failure(SnapshotAbortReason("\(vm): no image writer"))
        }
        guard let monitor = await self.monitor(vm) else {
            return .failure(SnapshotAbortReason("\(vm): not running"))
        }
        let mode = run.plan.mode
        let layers = DiskLayers(config: self.config)
        var disk: VMCutRunner.DiskFreeze?
        if let configured = self.hosted.definition(vm)?.disk {
            // Before the pause, not during it.
            try? FileManager.default.createDirectory(atPath: layers.directory(vm), withIntermediateDirectories: true)
            let overlay = layers.newOverlay(vm, label: "snapshot-\(id)")
            disk = VMCutRunner.DiskFreeze(layers: layers, configured: configured, overlay: overlay)
        }
        let runner = VMCutRunner(
            vm: vm,
            monitor: monitor,
            switchService: self.switchService,
            nicSocket: PeerDaemon.paths(self.config, vm).nicSocket,
            uri: "unix:\(writer.socketPath)",
            precopy: mode == .precopy,
            disk: disk,
            logger: self.logger
        )
        return await runner.run(triggered: false)
    }

    private func cutFinished(_ id: UInt64, vm: String, _ outcome: Result<VMCutRunner.Outcome, SnapshotAbortReason>)
        async
    {
        guard var run = self.participants[id] else { return }
        let directives: [SnapshotParticipant<Instant>.Directive]
        switch outcome {
        case .success(let result):
            run.outcomes[vm] = result
            directives = run.machine.vmCut(result.report, now: .now)
        case .failure(let reason):
            directives = run.machine.vmCutFailed(vm, reason: reason.message, now: .now)
        }
        self.participants[id] = run
        if run.machine.phase == .aborted { try? await self.switchService.endSnapshot(vms: [vm]) }
        await self.executeParticipant(id, directives)
    }

    /// A frame of the new epoch reached a VM not cut yet: cut it now (or release it, if no snapshot wants it).
    func vmTriggered(_ vm: String) async {
        guard
            let (id, run) = self.participants.first(where: {
                $0.value.machine.vms.contains(vm) && [.prepared, .cutting].contains($0.value.machine.phase)
            })
        else {
            try? await self.switchService.cancelCut(vm)
            try? await self.switchService.releaseHeld(vm)
            return
        }
        var machine = run.machine
        let directives = machine.vmTriggered(vm, now: .now)
        self.participants[id]?.machine = machine
        await self.executeParticipant(id, directives)
    }

    /// Once every local VM is cut: peers without VMs close their channels, and durability begins.
    private func afterCut(_ id: UInt64) async {
        guard let run = self.participants[id], run.machine.phase == .cut, !run.durabilityStarted else { return }
        self.participants[id]?.durabilityStarted = true
        if run.machine.vms.isEmpty, !run.markersSent, let vni = VNI(run.plan.vni) {
            self.participants[id]?.markersSent = true
            try? await self.switchService.sendMarkers(vni: vni, epoch: run.machine.key.epoch)
        }
        self.spawn({ await self.makeDurable(id) }) { outcome in await self.imagesDurable(id, outcome) }
    }
}
