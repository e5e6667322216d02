import Foundation
import Logging
import VNSnapCore

/// Ownership of VMs (issue 14): the initiator records where restores move VMs; every peer merges the records it
/// hears (from the initiator, or by catalog sync) and stops its copy of a VM that another peer now owns; a peer
/// starting up waits until it has heard the cluster's records before it starts (or reattaches) any VM.
extension SnapshotService {
    /// How long a peer starting up waits for the cluster's records when no other member is alive (it may be the
    /// first one up), and at most.
    static let ownershipWaitAlone = Duration.seconds(3)
    static let ownershipWaitLongest = Duration.seconds(15)

    /// The ownership record of `vm` once this peer has heard the cluster's records since it started (or has waited
    /// long enough: it is alone); `nil` when the cluster has none.
    public func admissionRecord(_ vm: String) async -> VMOwnership? {
        while self.ownershipHeard == nil, !Task.isCancelled {
            let waited = self.started.duration(to: .now)
            let others = ((try? await self.membership.view())?.alive.count ?? 1) - 1
            if waited >= Self.ownershipWaitLongest || (others <= 0 && waited >= Self.ownershipWaitAlone) {
                if !self.ownershipWaitLogged {
                    self.ownershipWaitLogged = true
                    self.logger.warning(
                        "Starting VMs without having heard the cluster's ownership records",
                        metadata: ["peer.aliveOthers": "\(others)", "wait.seconds": "\(waited.inSeconds)"]
                    )
                }
                break
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return try? await self.catalog.owners()[vm]
    }

    /// Restorer: asks the initiator to record where restore `run` places the VMs it moves.
    func askOwners(_ run: UInt64) async {
        guard let ask = self.restores[run]?.ownersAsk, self.restores[run]?.coordinator.awaitingOwners == true else {
            return
        }
        self.restores[run]?.ownersAskedAt = .now
        guard let view = try? await self.membership.view(), let initiator = view.initiator else {
            guard var current = self.restores[run] else { return }
            let directives = current.coordinator.ownersRefused(
                "no initiator: this peer does not see a majority of the cluster",
                now: .now
            )
            self.restores[run] = current
            return await self.executeRestore(run, directives)
        }
        guard let blob = try? JSONEncoder().encode(ask) else { return }
        let key = SnapshotKey(id: run, violin: ask.violin, epoch: 0, term: view.term)
        await self.membership.send(
            snapshot: SnapshotMessage(key: key, from: self.me, body: .owners(Array(blob))),
            to: initiator
        )
    }

    /// An `owners` message: an ask (this peer is the initiator), an answer to this peer's ask, or news.
    func ownersMessage(_ message: SnapshotMessage, _ blob: [UInt8]) async {
        guard let change = try? JSONDecoder().decode(OwnershipChange.self, from: Data(blob)) else {
            self.logger.warning("Unreadable ownership message", metadata: ["peer.id": "\(message.from)"])
            return
        }
        if !change.placement.isEmpty { return await self.serveOwners(message, change) }
        let run = message.key.id
        if var current = self.restores[run], current.coordinator.awaitingOwners {
            let directives: [RestoreCoordinator<Instant>.Directive]
            if let refusal = change.refusal {
                directives = current.coordinator.ownersRefused(refusal, now: .now)
            } else {
                await self.learnOwners(change.records)
                current = self.restores[run] ?? current
                directives = current.coordinator.ownersRecorded(now: .now)
            }
            self.restores[run] = current
            return await self.executeRestore(run, directives)
        }
        if change.refusal == nil { await self.learnOwners(change.records) }
    }

    /// Initiator: records the new owners of the VMs a restore moves, if that restore holds its VIOLIN; answers the
    /// restorer and tells every member.
    private func serveOwners(_ message: SnapshotMessage, _ change: OwnershipChange) async {
        guard let view = try? await self.membership.view(),
            self.initiator.holdsOffice(initiator: view.initiator, term: view.term, now: .now)
        else { return }  // not the initiator: the restorer's ask times out, and it rolls back
        let run = message.key.id
        var answer = OwnershipChange(violin: change.violin)
        var written: [VMOwnership] = []
        if let holder = self.initiator.operations?.running(on: change.violin), holder.id == run,
            holder.kind == .restore
        {
            do {
                let moves = VMOwnership.moves(
                    change.placement,
                    violin: change.violin,
                    known: try await self.catalog.owners(),
                    configured: change.configured,
                    term: view.term
                )
                written = try await self.catalog.recordOwners(moves)
                answer.records = moves
            } catch {
                answer.refusal = "the initiator could not record them: \(error)"
            }
        } else {
            answer.refusal = "restore \(run) does not hold VIOLIN \(change.violin) at the initiator"
        }
        guard let blob = try? JSONEncoder().encode(answer) else { return }
        let key = SnapshotKey(id: run, violin: change.violin, epoch: 0, term: view.term)
        await self.membership.send(
            snapshot: SnapshotMessage(key: key, from: self.me, body: .owners(Array(blob))),
            to: message.from
        )
        guard !written.isEmpty,
            let news = try? JSONEncoder().encode(OwnershipChange(violin: change.violin, records: written))
        else { return }
        for record in written {
            self.logger.notice(
                "VM owner recorded",
                metadata: [
                    "vm.name": "\(record.vm)", "vm.owner": "\(record.owner)",
                    "vm.generation": "\(record.generation)", "membership.term": "\(record.term)",
                ]
            )
        }
        for peer in view.alive.keys.sorted() where peer != self.me && peer != message.from {
            await self.membership.send(
                snapshot: Self.syncMessage(from: self.me, .owners(Array(news))),
                to: peer
            )
        }
    }

    /// Merges records heard from another peer; a VM this peer runs that another now owns is stopped here (a copy
    /// left from before a restore moved it), and an adopted one is no longer started at boot.
    func learnOwners(_ records: [VMOwnership]) async {
        guard !records.isEmpty, let changed = try? await self.catalog.recordOwners(records) else { return }
        for record in changed where record.owner != self.config.peer.name {
            guard self.hosted.definition(record.vm) != nil else { continue }
            self.logger.warning(
                "A VM of this peer has moved: stopping the copy here",
                metadata: ["vm.name": "\(record.vm)", "vm.movedTo": "\(record.summary)"]
            )
            self.hosted.release(record.vm)
            await self.supervisor.leave(record.vm, movedTo: record)
        }
    }

    /// The fence's view of this peer: a majority or not; pauses the VMs once the lease has run out.
    func observeFence(now: Instant) async {
        guard var fence = self.fence else { return }
        let majority = (try? await self.membership.view())?.initiator != nil
        let action = fence.observe(majority: majority, now: now)
        self.fence = fence
        guard action == .pause else { return }
        self.logger.warning(
            "No majority seen for the fence's lease: pausing this peer's VMs",
            metadata: ["fence.afterSeconds": "\(fence.after.inSeconds)"]
        )
        await self.supervisor.fence()
    }

    /// The cluster's ownership records were heard: a fenced peer that sees a majority again resumes the VMs it
    /// still owns (the others were stopped as the records were merged).
    func ownershipHeardForFence(now: Instant) async {
        guard var fence = self.fence else { return }
        let action = fence.ownershipHeard(now: now)
        self.fence = fence
        guard action == .resume else { return }
        self.logger.notice("A majority again, and the ownership records heard: resuming the VMs this peer owns")
        await self.supervisor.unfence()
    }
}
