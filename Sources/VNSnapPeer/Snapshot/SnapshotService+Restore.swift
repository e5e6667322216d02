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
    var rollingBack = false
    var progress: (@Sendable (String) async -> Void)?
}

/// A restore as a peer holding VMs of the snapshot carries it out.
struct HolderRestore {
    /// The snapshot restored.
    var snapshot: UInt64 = 0
    var answers: [RestoreStep: SnapshotMessage.Body] = [:]
    var running: Set<RestoreStep> = []
    /// New QEMUs loaded beside the running VMs, by VM, until the switch-over or a rollback.
    var staged: [String: StagedVM] = [:]
    /// Running VMs paused in `pause`, until the switch-over or a rollback.
    var paused: [String] = []
    var switchedOver = false
    var rolledBack = false
    var at = ContinuousClock.now
    /// When the restorer last asked anything: a holder left with paused or staged VMs by a silent restorer
    /// rolls back on its own.
    var heard = ContinuousClock.now

    /// Whether it holds VMs the restore has not settled yet (or a step is under way).
    var unsettled: Bool { !self.running.isEmpty || !self.staged.isEmpty || !self.paused.isEmpty }
}

/// A VM's new QEMU, loaded paused beside its running one.
struct StagedVM {
    var machine: QEMUMachine
    /// The fresh overlay it runs on (recorded as the VM's disk at the switch-over).
    var overlay: VMDefinition.Disk?
    /// A lost peer's VM, adopted at the switch-over.
    var adopting: VMDefinition?
    /// Its channel log, re-injected before it resumes.
    var frames: [[UInt8]]
}

/// Per-VM restore timings, sent back with each step's answer.
public struct RestoreTimings: Sendable, Codable, Hashable {
    /// Milliseconds per VM for the step.
    public var milliseconds: [String: Double]
    /// Frames re-injected per VM (resume step).
    public var injected: [String: Int]
}

extension SnapshotService {
    /// Restores snapshot `id` once the initiator grants it the VIOLIN: verify everywhere, load beside the running
    /// VMs everywhere, pause them everywhere, switch over and resume. Throws with the step and the reason; a
    /// failure before the switch-over leaves every VM running as it was (rolled back).
    public func restore(
        _ id: UInt64,
        replay: Bool = true,
        on chosen: [String: String] = [:],
        progress: @escaping @Sendable (String) async -> Void
    ) async throws -> [RestoreStep: [String: RestoreTimings]] {
        guard let entry = try await self.catalog.entry(id), entry.state == "committed", let manifest = entry.manifest
        else {
            throw SnapshotError(
                .notFound,
                "no committed snapshot \(id) in this peer's catalog (see `vnsnap-peer list`)"
            )
        }
        let view = try await self.membership.view()
        let moved = try Self.placeLostVMs(manifest, view: view, chosen: chosen)
        var holders: [PeerID: String] = [:]
        for vm in manifest.vms {
            let peer = moved[vm.name] ?? PeerID(name: vm.peer)
            holders[peer] = view.alive[peer] ?? vm.peer
        }
        for (vm, peer) in moved.sorted(by: { $0.key < $1.key }) {
            let from = manifest.vms.first { $0.name == vm }?.peer ?? "?"
            await progress("\(vm) ran on \(from), which is not alive: restoring it on \(holders[peer] ?? "\(peer)")")
        }
        // One operation per VIOLIN, and the snapshot pinned while it is restored (issue 13).
        return try await self.withOperation(
            .restore,
            violin: manifest.violin,
            snapshot: id,
            wait: true,
            progress: progress
        ) {
            run in
            try await self.runRestore(
                run,
                manifest: manifest,
                view: try await self.membership.view(),
                holders: holders,
                moved: moved,
                replay: replay,
                progress: progress
            )
        }
    }

    /// A granted restore (`run` is its operation's id), driven to its end while its lease is renewed every second.
    private func runRestore(
        _ run: UInt64,
        manifest: SnapshotManifest,
        view: MembershipView,
        holders: [PeerID: String],
        moved: [String: PeerID],
        replay: Bool,
        progress: @escaping @Sendable (String) async -> Void
    ) async throws -> [RestoreStep: [String: RestoreTimings]] {
        let id = manifest.id
        let key = SnapshotKey(id: id, violin: manifest.violin, epoch: manifest.epoch, term: view.term)
        let coordinator = RestoreCoordinator<Instant>(
            key: key,
            run: run,
            me: self.me,
            holders: Set(holders.keys),
            replay: replay,
            moved: moved,
            now: .now
        )
        self.restores[run] = RestoreRun(coordinator: coordinator, progress: progress)
        self.logger.info("Restore started", metadata: ["snapshot.id": "\(id)", "restore.run": "\(run)"])
        await progress("verifying every chunk on \(holders.values.sorted().joined(separator: ", "))")
        await self.executeRestore(run, coordinator.start())
        var renewed = ContinuousClock.now
        while let current = self.restores[run], current.failure == nil, !current.coordinator.succeeded {
            try? await Task.sleep(for: .milliseconds(10))
            if renewed.duration(to: .now) >= .seconds(1) {
                renewed = .now
                await self.renewOperation(run, kind: .restore, violin: manifest.violin, snapshot: id)
            }
        }
        guard let done = self.restores.removeValue(forKey: run) else {
            throw SnapshotError(.notFound, "restore \(run) vanished")
        }
        if let failure = done.failure { throw SnapshotError(.failed, failure) }
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

    /// Where the VMs of lost peers go (`RestorePlacement`); refuses, touching nothing, when one cannot move.
    static func placeLostVMs(_ manifest: SnapshotManifest, view: MembershipView, chosen: [String: String]) throws
        -> [String: PeerID]
    {
        let moved: [String: PeerID]
        do {
            moved = try RestorePlacement.place(
                manifest.vms.map { RestorePlacement.VM(name: $0.name, peer: PeerID(name: $0.peer), peerName: $0.peer) },
                alive: view.alive,
                hosts: view.vmHosts,
                chosen: chosen
            )
        } catch {
            throw SnapshotError(.refused, "snapshot \(manifest.id): \(error); nothing was touched")
        }
        for vm in manifest.vms where moved[vm.name] != nil {
            guard vm.definition != nil else {
                throw SnapshotError(
                    .refused,
                    "snapshot \(manifest.id): VM \(vm.name) ran on \(vm.peer), which is not alive, and the snapshot does not record its definition (taken by an older version); it restores only on \(vm.peer); nothing was touched"
                )
            }
            guard vm.replicas?.isEmpty == false else {
                throw SnapshotError(
                    .refused,
                    "snapshot \(manifest.id): VM \(vm.name)'s images are on the disk of \(vm.peer), which is not alive (snapshots taken with --target memory keep them on store peers); restore when \(vm.peer) is back; nothing was touched"
                )
            }
        }
        return moved
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
                    case .verify: "every chunk verified; loading each VM paused beside its running copy"
                    case .load: "every VM loaded beside its running copy; pausing the running ones"
                    case .pause: "every running VM paused; switching over and resuming them together"
                    case .resume, .rollback: nil
                    }
                if let next, let progress = self.restores[run]?.progress { await progress(next) }
            case .failed(let step, let reason):
                self.restores[run]?.failure = "restore failed in step \(step): \(reason)"
            }
            if case .send(let message, _) = directive, case .restore(_, .rollback, _, _) = message.body,
                self.restores[run]?.rollingBack == false
            {
                self.restores[run]?.rollingBack = true
                if let progress = self.restores[run]?.progress {
                    await progress("a step failed; rolling back: new VMs stopped, running ones resumed")
                }
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
        for (run, holding) in self.holding where holding.at.duration(to: now) > .seconds(3600) && !holding.unsettled {
            self.holding[run] = nil
        }
        // A restorer silent with VMs paused here (or loaded beside) is gone: put them back as they were.
        for (run, holding) in self.holding where holding.running.isEmpty && !holding.switchedOver {
            let silence = holding.heard.duration(to: now)
            let limit = holding.paused.isEmpty ? Self.stagedSilence : Self.pausedSilence
            guard !holding.staged.isEmpty || !holding.paused.isEmpty, silence > limit else { continue }
            self.logger.warning(
                "Restorer silent: rolling the restore back here",
                metadata: ["restore.run": "\(run)", "restore.silentSeconds": "\(Int(silence.inSeconds))"]
            )
            self.holding[run]?.running.insert(.rollback)
            self.spawn({ await self.rollBack(run) }) { problems in
                let body = SnapshotMessage.Body.restoreAnswer(
                    run: run,
                    step: .rollback,
                    ok: problems.isEmpty,
                    reason: problems.joined(separator: "; "),
                    blob: []
                )
                await self.finishStep(run, step: .rollback, body: body, key: nil, to: nil)
            }
        }
    }

    /// How long a holder with VMs paused for a restore waits for the restorer before rolling back by itself.
    static let pausedSilence = Duration.seconds(20)
    /// The same with VMs only loaded beside the running ones.
    static let stagedSilence = Duration.seconds(120)

    /// Whether a restore of snapshot `id` is under way here (its images may not be deleted yet).
    func restoreInUse(_ id: UInt64) -> Bool {
        self.holding.values.contains { $0.snapshot == id && $0.unsettled && !$0.rolledBack }
    }

    /// Deletions deferred while a restore used their snapshot, now that it does not.
    func applyDeferredDeletes() async {
        for id in self.deferredDeletes.sorted() where !self.restoreInUse(id) {
            self.deferredDeletes.remove(id)
            await self.deleteLocally(id)
        }
    }

    func restoreMessage(_ message: SnapshotMessage) async {
        switch message.body {
        case .restoreAnswer(let run, _, _, _, _):
            guard var current = self.restores[run] else { return }
            let directives = current.coordinator.onMessage(message, now: .now)
            self.restores[run] = current
            await self.executeRestore(run, directives)
        case .restore(let run, let step, let replay, let moved):
            self.holding[run]?.heard = .now
            if let answer = self.holding[run]?.answers[step] {
                return await self.membership.send(
                    snapshot: SnapshotMessage(key: message.key, from: self.me, body: answer),
                    to: message.from
                )
            }
            if self.holding[run]?.running.contains(step) == true { return }
            self.holding[run, default: HolderRestore(snapshot: message.key.id)].running.insert(step)
            self.spawn({ await self.carryOut(step, run: run, key: message.key, replay: replay, moved: moved) }) {
                body in
                await self.finishStep(run, step: step, body: body, key: message.key, to: message.from)
            }
        default:
            break
        }
    }

    /// A step has ended here: its answer is kept (a repeated request gets it again) and sent, when asked.
    private func finishStep(
        _ run: UInt64,
        step: RestoreStep,
        body: SnapshotMessage.Body,
        key: SnapshotKey?,
        to: PeerID?
    )
        async
    {
        self.holding[run]?.running.remove(step)
        self.holding[run]?.answers[step] = body
        guard let key, let to else { return }
        await self.membership.send(snapshot: SnapshotMessage(key: key, from: self.me, body: body), to: to)
    }
}
