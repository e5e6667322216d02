import Foundation
import Logging
import VNSnapCore
import VNSnapCrypto

/// What `vnsnap-peer snapshot`, `list`, `show` and `delete` ask of the local peer.
extension SnapshotService {
    /// Asks the initiator for a snapshot of `violin` and follows it to its end; `progress` hears every change
    /// of phase. With `wait` it queues behind an operation already running on the VIOLIN; without, it is refused.
    /// Returns the committed manifest, or throws why it was refused or aborted.
    public func requestSnapshot(
        violin: String,
        mode: SnapshotMode,
        name: String,
        target: SnapshotTarget = .disk,
        wait: Bool = true,
        progress: @escaping @Sendable (SnapshotProgress) async -> Void
    ) async throws -> SnapshotManifest {
        let view = try await self.membership.view()
        guard var initiator = view.initiator else {
            throw SnapshotError(
                .refused,
                "no initiator: this peer does not see a majority of the cluster (see `vnsnap-peer status`)"
            )
        }
        let requestID = UInt64.random(in: 1...UInt64(Int64.max))
        let key = SnapshotKey(id: requestID, violin: violin, epoch: 0, term: view.term)
        let request = SnapshotMessage(
            key: key,
            from: self.me,
            body: .request(mode: mode, name: name, target: target, wait: wait)
        )
        self.awaited[requestID] = .some(nil)
        defer { self.awaited[requestID] = nil }
        let deadline =
            ContinuousClock.now + self.settings.prepareTimeout + self.settings.cutTimeout
            + self.settings.streamTimeout + self.settings.settleTimeout
        var last: SnapshotProgress?
        var heardAt = ContinuousClock.now
        while ContinuousClock.now < deadline {
            // The request doubles as the poll: the initiator answers each with where the snapshot stands. Until it
            // has started, it goes to the initiator as this peer sees it now (a request still queued is served by a
            // successor); once started, to the initiator that started it (a successor would start another: the
            // started one it takes over, and this peer follows it to its outcome below).
            if (last?.snapshotID ?? 0) == 0, let current = (try? await self.membership.view())?.initiator {
                initiator = current
            }
            await self.membership.send(snapshot: request, to: initiator)
            try? await Task.sleep(for: .milliseconds(100))
            guard case .some(.some(let current)) = self.awaited[requestID] else {
                if heardAt.duration(to: .now) > .seconds(10) {
                    let lost = view.names[initiator] ?? "\(initiator)"
                    // A snapshot under way that this peer takes part in: its outcome arrives here whoever decides it.
                    if let id = last?.snapshotID, id != 0, self.participants[id] != nil {
                        await progress(
                            SnapshotProgress(
                                snapshotID: id,
                                phase: "initiator lost",
                                finished: false,
                                message: "\(lost) does not answer; the next initiator commits or aborts it"
                            )
                        )
                        return try await self.awaitOutcome(id, until: deadline)
                    }
                    throw SnapshotError(.timeout, "the initiator \(lost) does not answer")
                }
                continue
            }
            heardAt = .now
            // Consumed: the next poll must be answered afresh, or the initiator's silence would go unnoticed.
            self.awaited[requestID] = .some(nil)
            if current != last {
                last = current
                await progress(current)
            }
            guard current.finished else { continue }
            guard current.phase == "committed" else {
                throw SnapshotError(.aborted, "snapshot \(current.phase): \(current.message)")
            }
            let manifest = try SnapshotManifest.decode(Data(current.blob), source: "the initiator's manifest")
            try await self.catalog.commit(manifest, document: Data(current.blob))
            return manifest
        }
        throw SnapshotError(
            .timeout,
            "no outcome from the initiator in time; see `vnsnap-peer list` for whether it committed"
        )
    }

    /// How long a peer that sees no majority waits for an outcome before saying it cannot know it yet.
    static let minorityOutcomeWait = Duration.seconds(30)

    /// The outcome of snapshot `id` as it reaches this peer as a participant (after its initiator was lost).
    ///
    /// On the minority side of a partition the outcome is the majority's to decide, and reaches this peer only once
    /// it is back with them: after `minorityOutcomeWait` without a majority the request ends, saying so, instead of
    /// waiting out the stream timeout (minutes).
    private func awaitOutcome(_ id: UInt64, until deadline: ContinuousClock.Instant) async throws -> SnapshotManifest {
        var minoritySince: ContinuousClock.Instant?
        while ContinuousClock.now < deadline {
            if (try? await self.membership.view())?.initiator == nil {
                let since = minoritySince ?? .now
                minoritySince = since
                if since.duration(to: .now) >= Self.minorityOutcomeWait {
                    throw SnapshotError(
                        .timeout,
                        "this peer sees no majority (cut off?): snapshot \(id)'s outcome is decided on the majority side "
                            + "and reaches this peer once it is back with them; see `vnsnap-peer list` then"
                    )
                }
            } else {
                minoritySince = nil
            }
            if let entry = try await self.catalog.entry(id) {
                if entry.state == "committed", let manifest = entry.manifest { return manifest }
                // A peer without VMs may have aborted on its own while a successor committed: it learns the
                // commit later, so its abort is not final.
                let final = entry.state == "deleted" || self.participants[id]?.machine.vms.isEmpty != true
                if final, entry.state == "aborted" || entry.state == "deleted" {
                    throw SnapshotError(
                        .aborted,
                        "snapshot \(entry.state): \(entry.reason ?? "by the initiator that took it over")"
                    )
                }
            }
            if let run = self.participants[id], run.machine.phase == .aborted {
                throw SnapshotError(.aborted, "snapshot aborted: \(run.abortReason ?? "aborted")")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw SnapshotError(
            .timeout,
            "no outcome of snapshot \(id) in time; see `vnsnap-peer list` for whether it committed"
        )
    }

    /// Committed snapshots this peer knows of.
    public func list() async throws -> [SnapshotCatalog.Entry] {
        try await self.catalog.list()
    }

    /// One committed snapshot's manifest.
    public func manifest(_ id: UInt64) async throws -> SnapshotManifest {
        guard let entry = try await self.catalog.entry(id), let manifest = entry.manifest, entry.state == "committed"
        else {
            throw SnapshotError(.notFound, "no committed snapshot \(id) (see `vnsnap-peer list`)")
        }
        return manifest
    }

    /// The committed snapshots (as "ID (name)") whose images are sealed at rest under the installed key named by
    /// `reference`: removing that key would make them unreadable.
    public func snapshotsSealed(withKey reference: String) async throws -> [String] {
        guard let key = try? self.keyring().resolve(reference) else { return [] }
        return try await self.catalog.list().compactMap { entry in
            guard let manifest = entry.manifest, manifest.vms.contains(where: { $0.sealedWith == key.keyID }) else {
                return nil
            }
            return "\(entry.id) (\(entry.name))"
        }
    }

    /// Deletes snapshot `id` on every alive member (images and catalog rows); returns the members that did not
    /// answer within `timeout`. With `wait` it queues behind an operation running on the VIOLIN; without, it is
    /// refused.
    public func delete(_ id: UInt64, wait: Bool = false, timeout: Duration = .seconds(5)) async throws -> [String] {
        guard let entry = try await self.catalog.entry(id) else {
            throw SnapshotError(.notFound, "no snapshot \(id) (see `vnsnap-peer list`)")
        }
        // A snapshot a restore uses is not deleted under it (issue 13): the initiator refuses, naming the restore.
        return try await self.withOperation(.delete, violin: entry.violin, snapshot: id, wait: wait) { _ in
            try await self.deleteEverywhere(entry, timeout: timeout)
        }
    }

    private func deleteEverywhere(_ entry: SnapshotCatalog.Entry, timeout: Duration) async throws -> [String] {
        let id = entry.id
        let view = try await self.membership.view()
        let others = Set(view.alive.keys).subtracting([self.me])
        self.deletions[id] = others
        defer { self.deletions[id] = nil }
        let key = SnapshotKey(id: id, violin: entry.violin, epoch: entry.epoch, term: view.term)
        let deadline = ContinuousClock.now + timeout
        while let waiting = self.deletions[id], !waiting.isEmpty, ContinuousClock.now < deadline {
            for peer in waiting.sorted() {
                await self.membership.send(
                    snapshot: SnapshotMessage(key: key, from: self.me, body: .deleteSnapshot),
                    to: peer
                )
            }
            try? await Task.sleep(for: .milliseconds(200))
        }
        // Replicas on store peers go too.
        let stores = Set(entry.manifest?.vms.flatMap { $0.replicas ?? [] } ?? [])
        let unreached = await self.dropReplicas(snapshot: id, on: stores)
        await self.deleteLocally(id)
        let silent = (self.deletions[id] ?? []).map { view.names[$0] ?? "\($0)" }
        return (silent + unreached.map { "store \($0)" }).sorted()
    }

    /// The longest gap in each local VM's payload frames of `violin` over `duration`, with no snapshot: the
    /// baseline a snapshot's stall is compared with (a TCG guest's traffic has gaps of its own).
    public func measureStall(violin: String, duration: Duration) async throws -> [String: UInt64] {
        guard self.config.violins.contains(where: { $0.name == violin }) else {
            throw SnapshotError(
                .notFound,
                "no VIOLIN \(violin) (known: \(self.config.violins.map(\.name).joined(separator: ", ")))"
            )
        }
        let vms = self.hosted.names(on: violin).filter { !self.supervisor.hasMoved($0) }
        guard !vms.isEmpty else { return [:] }
        guard
            !self.participants.values.contains(where: {
                $0.ended == nil && $0.plan.vms.values.joined().contains(where: vms.contains)
            })
        else {
            throw SnapshotError(.refused, "a snapshot of \(violin) is running here; measure when it has ended")
        }
        try await self.switchService.measure(vms: vms, stallOnly: true)
        try? await Task.sleep(for: duration)
        // Every port's measurement ends, whatever happened to the others.
        var stalls: [String: UInt64] = [:]
        for vm in vms { stalls[vm] = try? await self.switchService.finishMeasure(vm) }
        guard stalls.count == vms.count else {
            throw SnapshotError(.refused, "a snapshot of \(violin) began during the measurement; measure again")
        }
        return stalls
    }
}
