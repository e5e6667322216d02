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
        on chosen: [String: String] = [:],
        progress: @escaping @Sendable (String) async -> Void
    ) async throws -> [RestoreStep: [String: RestoreTimings]] {
        guard let entry = try self.catalog.entry(id), entry.state == "committed", let manifest = entry.manifest else {
            throw SnapshotError("no committed snapshot \(id) in this peer's catalog (see `vnsnap-peer list`)")
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
        let run = UInt64.random(in: 1...UInt64(Int64.max))
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
            throw SnapshotError("snapshot \(manifest.id): \(error); nothing was touched")
        }
        for vm in manifest.vms where moved[vm.name] != nil {
            guard vm.definition != nil else {
                throw SnapshotError(
                    "snapshot \(manifest.id): VM \(vm.name) ran on \(vm.peer), which is not alive, and the snapshot does not record its definition (taken by an older version); it restores only on \(vm.peer); nothing was touched"
                )
            }
            guard vm.replicas?.isEmpty == false else {
                throw SnapshotError(
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
        case .restore(let run, let step, let replay, let moved):
            if let answer = self.holding[run]?.answers[step] {
                return await self.membership.send(
                    snapshot: SnapshotMessage(key: message.key, from: self.me, body: answer),
                    to: message.from
                )
            }
            if self.holding[run]?.running.contains(step) == true { return }
            self.holding[run, default: HolderRestore()].running.insert(step)
            Task {
                let body = await self.carryOut(step, run: run, key: message.key, replay: replay, moved: moved)
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
}
