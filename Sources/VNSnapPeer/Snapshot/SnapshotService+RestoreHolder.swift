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
    /// What one step did here: its answer, and the VMs it loaded or paused (kept even when it failed half-way,
    /// so a rollback finds them).
    struct StepResult: Sendable {
        var body: SnapshotMessage.Body
        var staged: [String: StagedVM] = [:]
        var paused: [String] = []
    }

    /// Carries out the holder table's actions.
    func executeHolder(_ actions: [RestoreHolder<Instant>.Action], replay: Bool = true, moved: [String: PeerID] = [:])
        async
    {
        for action in actions {
            switch action {
            case .send(let message, let peer):
                await self.membership.send(snapshot: message, to: peer)
            case .carryOut(let run, let step):
                guard let key = self.holder.key(of: run) else { continue }
                self.spawn({ await self.carryOut(step, run: run, key: key, replay: replay, moved: moved) }) { result in
                    await self.stepDone(run, step: step, result)
                }
            case .rollBack(let run, let discard, let resume):
                self.spawn({ await self.rollBack(run, discard: discard, resume: resume) }) { problems in
                    await self.rollbackDone(run, problems: problems)
                }
            case .delete(let ids):
                for id in ids { await self.deleteLocally(id) }
            }
        }
    }

    private func stepDone(_ run: UInt64, step: RestoreStep, _ result: StepResult) async {
        // Only a load stages machines (an empty entry for every other step would stay for good).
        if !result.staged.isEmpty { self.stagedMachines[run, default: [:]].merge(result.staged) { _, new in new } }
        let actions = self.holder.stepFinished(
            run: run,
            step: step,
            body: result.body,
            staged: result.staged.keys.sorted(),
            paused: result.paused,
            now: .now
        )
        await self.executeHolder(actions)
    }

    private func rollbackDone(_ run: UInt64, problems: [String]) async {
        await self.executeHolder(self.holder.rolledBack(run: run, problems: problems, now: .now))
    }

    /// One step for this peer's VMs of the snapshot.
    func carryOut(
        _ step: RestoreStep,
        run: UInt64,
        key: SnapshotKey,
        replay: Bool,
        moved: [String: PeerID]
    ) async -> StepResult {
        var result = StepResult(body: .restoreAnswer(run: run, step: step, ok: true, reason: "", blob: []))
        // A disk merge under way stops: the restore reads the files it rewrites.
        await self.diskMerger.yield()
        do {
            guard let manifest = try await self.catalog.entry(key.id)?.manifest else {
                throw SnapshotError(.notFound, "\(self.config.peer.name) has no manifest of snapshot \(key.id)")
            }
            let local = manifest.vms.filter { (moved[$0.name] ?? PeerID(name: $0.peer)) == self.me }
            // VMs this peer runs that the restore moves to another peer: paused with the others, stopped at the
            // switch-over.
            let leaving = moved.filter { $0.value != self.me && self.hosted.definition($0.key) != nil }.keys.sorted()
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
                    result.staged[vm.name] = try await self.stage(manifest, vm: vm.name)
                    timings.milliseconds[vm.name] = started.duration(to: .now).inSeconds * 1000
                }
            case .pause:
                for vm in local + manifest.vms.filter({ leaving.contains($0.name) }) {
                    let started = ContinuousClock.now
                    // A lost peer's VM has no running copy here; the others pause, reversibly.
                    if let monitor = await self.monitor(vm.name) {
                        _ = try await monitor.execute("stop")
                        result.paused.append(vm.name)
                    }
                    timings.milliseconds[vm.name] = started.duration(to: .now).inSeconds * 1000
                }
            case .switchOver:
                let owners = leaving.isEmpty ? [:] : try await self.catalog.owners()
                for vm in leaving where await self.monitor(vm) != nil {
                    let target = moved[vm].map { "\($0)" } ?? "another peer"
                    let record =
                        owners[vm]
                        ?? VMOwnership(vm: vm, violin: manifest.violin, owner: target, generation: 0, term: 0)
                    self.hosted.release(vm)
                    await self.supervisor.leave(vm, movedTo: record)
                }
                try await self.switchOver(
                    run,
                    manifest: manifest,
                    vms: local.map(\.name),
                    replay: replay,
                    into: &timings
                )
            case .resume:
                // Back to back, so the group starts within a few milliseconds of each other.
                for vm in self.switchedOver.removeValue(forKey: run) ?? [] {
                    let started = ContinuousClock.now
                    guard let monitor = await self.monitor(vm) else {
                        throw SnapshotError(.failed, "VM \(vm) is not running after its switch-over")
                    }
                    _ = try await monitor.execute("cont")
                    timings.milliseconds[vm] = started.duration(to: .now).inSeconds * 1000
                }
                self.logger.info("Restore resumed the VMs", metadata: ["snapshot.id": "\(key.id)"])
            case .rollback:
                break  // the holder table asks for `rollBack`, never for this
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            result.body = .restoreAnswer(
                run: run,
                step: step,
                ok: true,
                reason: "",
                blob: Array(try encoder.encode(timings))
            )
        } catch {
            self.logger.error(
                "Restore step failed",
                metadata: ["snapshot.id": "\(key.id)", "restore.step": "\(step)", "restore.error": "\(error)"]
            )
            result.body = .restoreAnswer(
                run: run,
                step: step,
                ok: false,
                reason: "\(self.config.peer.name): \(error)",
                blob: []
            )
        }
        return result
    }

    /// The switch-over: each old VM stops and its staged machine takes its place (disk record, adoption,
    /// switch epoch), then the channel logs go in; the new VMs stay paused for the restore's `resume` (so no
    /// restored VM anywhere sends a frame before every channel log is in place). A VM whose switch-over failed,
    /// and those after it, go back to running as they were.
    private func switchOver(
        _ run: UInt64,
        manifest: SnapshotManifest,
        vms: [String],
        replay: Bool,
        into timings: inout RestoreTimings
    ) async throws {
        let staged = self.stagedMachines[run] ?? [:]
        let missing = vms.filter { staged[$0] == nil }
        guard missing.isEmpty else {
            throw SnapshotError(
                .notFound,
                "no VM loaded here for \(missing.joined(separator: ", ")) (was the load step lost?)"
            )
        }
        self.stagedMachines[run] = nil
        var promoted: [String] = []
        do {
            for vm in vms {
                let started = ContinuousClock.now
                let next = staged[vm]!  // !-safe, checked above
                if let adopting = next.adopting {
                    try self.hosted.adopt(adopting)
                    self.logger.notice(
                        "VM of a lost peer adopted",
                        metadata: ["vm.name": "\(vm)", "snapshot.id": "\(manifest.id)"]
                    )
                }
                let layers = DiskLayers(config: self.config)
                var previous: VMDefinition.Disk?
                if let overlay = next.overlay, let definition = self.hosted.definition(vm),
                    let configured = definition.disk
                {
                    previous = try layers.current(definition, logger: self.logger).disk
                    try layers.setActive(overlay, vm: vm, configured: configured)
                }
                do {
                    try await self.supervisor.promote(vm, next.machine)
                } catch {
                    // The VM goes on on the disk it had (the rollback removes the new overlay): recorded so again.
                    if let previous, let configured = self.hosted.definition(vm)?.disk {
                        try? layers.setActive(previous, vm: vm, configured: configured)
                    }
                    throw error
                }
                promoted.append(vm)
                try await self.switchService.setEpoch(vm, epoch: manifest.epoch)
                let frames = replay ? next.frames : []
                try await self.switchService.inject(vm, frames: frames)
                timings.injected[vm] = frames.count
                timings.milliseconds[vm] = started.duration(to: .now).inSeconds * 1000
            }
        } catch {
            let left = vms.filter { !promoted.contains($0) }
            _ = await self.rollBack(staged.filter { left.contains($0.key) }, resume: left)
            self.switchedOver[run] = promoted
            throw error
        }
        self.switchedOver[run] = vms
    }

    /// Undoes restore `run` here: the machines loaded for `discard` stop (their overlays removed), the VMs in
    /// `resume` are resumed. Returns what could not be put back.
    func rollBack(_ run: UInt64, discard: [String], resume: [String]) async -> [String] {
        let staged = (self.stagedMachines.removeValue(forKey: run) ?? [:]).filter { discard.contains($0.key) }
        let problems = await self.rollBack(staged, resume: resume)
        if !discard.isEmpty || !resume.isEmpty {
            self.logger.notice(
                "Restore rolled back: the running VMs go on as they were",
                metadata: [
                    "restore.run": "\(run)", "restore.discarded": "\(discard)", "restore.resumed": "\(resume)",
                ]
            )
        }
        return problems
    }

    private func rollBack(_ staged: [String: StagedVM], resume: [String]) async -> [String] {
        for (_, machine) in staged.sorted(by: { $0.key < $1.key }) {
            await self.supervisor.discard(machine.machine)
            if let overlay = machine.overlay { try? FileManager.default.removeItem(atPath: overlay.path) }
        }
        var problems: [String] = []
        for vm in resume {
            do {
                guard let monitor = await self.monitor(vm) else { throw SnapshotError(.failed, "it is not running") }
                let state = try await monitor.execute("query-status")["status"]?.stringValue
                if state == "paused" { _ = try await monitor.execute("cont") }
            } catch {
                problems.append("\(self.config.peer.name): \(vm) could not be resumed: \(error)")
            }
        }
        return problems
    }

}
