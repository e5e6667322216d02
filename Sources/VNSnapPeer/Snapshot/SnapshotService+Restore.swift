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
    /// What the initiator is asked to record before the switch-over (the restore moves VMs), and when it last was.
    var ownersAsk: OwnershipChange?
    var ownersAskedAt: ContinuousClock.Instant?
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
        wait: Bool = true,
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
        // Every VM goes where it runs now (issue 14): its ownership record, else the peer it ran on at the cut.
        let owners = try await self.catalog.owners()
        let moved = try Self.placeVMs(manifest, view: view, chosen: chosen, owners: owners)
        var holders: [PeerID: String] = [:]
        var placement: [String: String] = [:]
        for vm in manifest.vms {
            let peer = moved[vm.name] ?? PeerID(name: vm.peer)
            holders[peer] = view.alive[peer] ?? vm.peer
            placement[vm.name] = holders[peer]
            // A VM moved away from an alive peer (`--on`, `move`): that peer pauses its copy with the others and
            // stops it at the switch-over.
            let now = PeerID(name: owners[vm.name]?.owner ?? vm.peer)
            if now != peer, let name = view.alive[now] { holders[now] = name }
        }
        for (vm, peer) in moved.sorted(by: { $0.key < $1.key }) {
            let target = holders[peer] ?? "\(peer)"
            let now = owners[vm]?.owner ?? manifest.vms.first { $0.name == vm }?.peer ?? "?"
            if let record = owners[vm], record.owner == target {
                await progress("\(vm) runs on \(target) now (generation \(record.generation)): restoring it there")
            } else if chosen[vm] != nil {
                await progress("\(vm) moves from \(now) to \(target) (its copy on \(now) stops at the switch-over)")
            } else {
                let from = owners[vm]?.owner ?? manifest.vms.first { $0.name == vm }?.peer ?? "?"
                await progress("\(vm) ran on \(from), which is not alive: restoring it on \(target)")
            }
        }
        // VMs placed elsewhere than they run: the initiator records their new owners before the switch-over.
        let configured = Dictionary(uniqueKeysWithValues: manifest.vms.map { ($0.name, $0.peer) })
        let moves = VMOwnership.moves(
            placement,
            violin: manifest.violin,
            known: owners,
            configured: configured,
            term: 0
        )
        let ownership =
            moves.isEmpty
            ? nil : OwnershipChange(violin: manifest.violin, placement: placement, configured: configured)
        // One operation per VIOLIN, and the snapshot pinned while it is restored (issue 13).
        return try await self.withOperation(
            .restore,
            violin: manifest.violin,
            snapshot: id,
            wait: wait,
            progress: progress
        ) {
            run in
            let started = ContinuousClock.now
            do {
                let timings = try await self.runRestore(
                    run,
                    manifest: manifest,
                    view: try await self.membership.view(),
                    holders: holders,
                    moved: moved,
                    ownership: ownership,
                    replay: replay,
                    progress: progress
                )
                PeerMetrics.restoreEnded(succeeded: true, duration: started.duration(to: .now))
                return timings
            } catch {
                PeerMetrics.restoreEnded(succeeded: false, duration: started.duration(to: .now))
                throw error
            }
        }
    }

    /// A granted restore (`run` is its operation's id), driven to its end while its lease is renewed every second.
    private func runRestore(
        _ run: UInt64,
        manifest: SnapshotManifest,
        view: MembershipView,
        holders: [PeerID: String],
        moved: [String: PeerID],
        ownership: OwnershipChange?,
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
            recordsOwners: ownership != nil,
            now: .now
        )
        self.restores[run] = RestoreRun(coordinator: coordinator, progress: progress, ownersAsk: ownership)
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

    /// Where the VMs go (`RestorePlacement`): each where it runs now (its ownership record, else the peer it ran
    /// on at the cut), a lost peer's elsewhere; refuses, touching nothing, when one cannot be placed. Returns the
    /// VMs restored away from the peer they ran on at the cut.
    static func placeVMs(
        _ manifest: SnapshotManifest,
        view: MembershipView,
        chosen: [String: String],
        owners: [String: VMOwnership] = [:]
    ) throws -> [String: PeerID] {
        var moved: [String: PeerID]
        do {
            moved = try RestorePlacement.place(
                manifest.vms.map { vm in
                    let now = owners[vm.name]?.owner ?? vm.peer
                    return RestorePlacement.VM(name: vm.name, peer: PeerID(name: now), peerName: now)
                },
                alive: view.alive,
                hosts: view.vmHosts,
                chosen: chosen
            )
        } catch {
            throw SnapshotError(.refused, "snapshot \(manifest.id): \(error); nothing was touched")
        }
        for vm in manifest.vms where moved[vm.name] == nil {
            if let owner = owners[vm.name]?.owner, owner != vm.peer { moved[vm.name] = PeerID(name: owner) }
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
                    "snapshot \(manifest.id): VM \(vm.name)'s images are on the disk of \(vm.peer), and it is to be restored on \(view.alive[moved[vm.name]!] ?? "another peer") (\(vm.peer) is not alive, or the VM has moved since; snapshots taken with --target memory keep images on store peers); nothing was touched"
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
                    case .pause:
                        self.restores[run]?.ownersAsk == nil
                            ? "every running VM paused; switching over (channel logs re-injected)" : nil
                    case .switchOver: "every VM switched over; resuming them together"
                    case .resume, .rollback: nil
                    }
                if let next, let progress = self.restores[run]?.progress { await progress(next) }
            case .failed(let step, let reason):
                self.restores[run]?.failure = "restore failed in step \(step): \(reason)"
            case .recordOwners:
                if let progress = self.restores[run]?.progress {
                    await progress("every running VM paused; recording the moved VMs' new owners")
                }
                await self.askOwners(run)
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
            if let waiting = self.restores[run], waiting.coordinator.awaitingOwners,
                waiting.ownersAskedAt.map({ $0.duration(to: now) >= .milliseconds(300) }) ?? true
            {
                await self.askOwners(run)
            }
            guard var current = self.restores[run] else { continue }
            let directives = current.coordinator.onTick(now: now)
            self.restores[run] = current
            await self.executeRestore(run, directives)
        }
        await self.executeHolder(self.holder.onTick(now: now))
    }

    func restoreMessage(_ message: SnapshotMessage) async {
        switch message.body {
        case .restoreAnswer(let run, _, _, _, _):
            guard var current = self.restores[run] else { return }
            let directives = current.coordinator.onMessage(message, now: .now)
            self.restores[run] = current
            await self.executeRestore(run, directives)
        case .restore(let run, let step, let replay, let moved):
            let actions = self.holder.onRequest(run: run, step: step, key: message.key, from: message.from, now: .now)
            await self.executeHolder(actions, replay: replay, moved: moved)
        default:
            break
        }
    }
}
