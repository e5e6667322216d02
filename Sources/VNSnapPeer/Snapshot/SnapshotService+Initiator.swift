import Foundation
import Logging
import VNSnapCore

/// The initiator's side: requests from any peer start a snapshot here; directives go out as messages.
extension SnapshotService {
    /// A request (or its poll) from the peer where `vnsnap-peer snapshot` runs.
    func serveRequest(
        _ message: SnapshotMessage,
        mode: SnapshotMode,
        name: String,
        target: SnapshotTarget,
        wait: Bool
    ) async {
        let requestID = message.key.id
        let view = try? await self.membership.view()
        // One operation per VIOLIN (issue 13): the driver's table is asked and answers with no suspension in
        // between, so two requests arriving together cannot both start.
        let inOffice =
            view.map { self.initiator.holdsOffice(initiator: $0.initiator, term: $0.term, now: .now) } ?? false
        let decision = self.initiator.request(
            requestID,
            violin: message.key.violin,
            ownerName: view?.names[message.from] ?? "\(message.from)",
            wait: wait,
            inOffice: inOffice,
            now: .now
        )
        let progress: SnapshotProgress
        switch decision {
        case .silent:
            return
        case .answer(let answer):
            progress = answer
        case .notInitiator:
            let other = view?.initiator.flatMap { view?.names[$0] }
            progress = SnapshotProgress(
                snapshotID: 0,
                phase: "refused",
                finished: true,
                message: other.map { "this peer is not the initiator; \($0) is (ask again)" }
                    ?? "no initiator: this peer does not see a majority of the cluster"
            )
        case .start:
            do {
                try await self.startSnapshot(
                    violin: message.key.violin,
                    mode: mode,
                    name: name,
                    target: target,
                    requestID: requestID
                )
            } catch {
                _ = self.initiator.notStarted(requestID, reason: "\(error)", now: .now)
            }
            guard let known = self.initiator.progress(ofRequest: requestID) else { return }
            progress = known
        }
        await self.answer(requestID, progress, to: message.from)
    }

    private func answer(_ requestID: UInt64, _ progress: SnapshotProgress, to peer: PeerID) async {
        let key = SnapshotKey(id: requestID, violin: "", epoch: 0, term: 0)
        await self.membership.send(
            snapshot: SnapshotMessage(key: key, from: self.me, body: .progress(progress)),
            to: peer
        )
    }

    /// Plans and starts a snapshot of `violin`; throws (refusing it) with a reason for the operator.
    private func startSnapshot(
        violin: String,
        mode: SnapshotMode,
        name: String,
        target: SnapshotTarget,
        requestID: UInt64
    ) async throws {
        let view = try await self.membership.view()
        guard view.initiator == self.me else {
            let other = view.initiator.flatMap { view.names[$0] }
            throw SnapshotError(
                .refused,
                other.map { "this peer is not the initiator; \($0) is (ask again)" }
                    ?? "no initiator: this peer does not see a majority of the cluster"
            )
        }
        guard let definition = self.config.violin(named: violin) else {
            let known = self.config.violins.map(\.name).joined(separator: ", ")
            throw SnapshotError(
                .notFound,
                "unknown VIOLIN \"\(violin)\" (the initiator knows: \(known.isEmpty ? "none" : known))"
            )
        }
        if let running = self.initiator.running(on: violin) {
            throw SnapshotError(.refused, "snapshot \(running.machine.key.id) of \(violin) is still in progress")
        }
        // The epoch must be past every VM's: past every snapshot of the VIOLIN this peer knows, and past its
        // own VMs' epochs (a participant whose VM is further refuses at prepare, naming it).
        let localEpochs = try await self.switchService.epochs()
        let highest = max(
            try await self.catalog.highestEpoch(violin: violin),
            self.initiator.highestEpoch(of: violin),
            self.hosted.names(on: violin).compactMap { localEpochs[$0] }.max() ?? 0
        )
        guard highest < UInt32.max else { throw SnapshotError(.refused, "VIOLIN \(violin) has run out of epochs") }
        // The plan's quorum: enough store peers alive for every image's replicas (each store then admits or
        // refuses its replicas at prepare, before any VM is cut).
        if target.kind == .memory, view.stores.count < target.replicas {
            let stores = view.stores.values.map(\.name).sorted()
            throw SnapshotError(
                .refused,
                "\(target.replicas) replicas per image need \(target.replicas) store peers; \(stores.count) alive (\(stores.isEmpty ? "none" : stores.joined(separator: ", ")))"
            )
        }
        let id = UInt64.random(in: 1...UInt64(Int64.max))
        let key = SnapshotKey(id: id, violin: violin, epoch: highest + 1, term: view.term)
        // Every alive member takes part: each knows its own VMs of the VIOLIN, and one without any still closes
        // its channels with end-of-epoch markers.
        let plan = SnapshotPlan(
            vms: Dictionary(uniqueKeysWithValues: view.alive.keys.map { ($0, [String]()) }),
            mode: mode,
            vni: definition.vni.rawValue,
            target: target,
            name: name
        )
        try await self.catalog.begin(key, name: name, mode: mode, createdAtNanoseconds: Self.wallNanoseconds())
        let machine = SnapshotInitiator<Instant>(key: key, me: self.me, plan: plan, settings: self.settings, now: .now)
        let directives = self.initiator.started(machine, name: name, requestID: requestID, now: .now)
        self.logger.info(
            "Snapshot started",
            metadata: [
                "snapshot.id": "\(id)", "snapshot.violin": "\(violin)", "snapshot.epoch": "\(key.epoch)",
                "snapshot.mode": "\(mode.rawValue)", "snapshot.participants": "\(plan.participants.count)",
            ]
        )
        await self.executeInitiator(id, directives)
    }

    /// A member died or left: a snapshot it takes part in cannot complete (before its commit point); one it
    /// initiated is taken over by the next initiator.
    func handleMemberDown(_ name: String) async {
        // Images streaming to it as a store fail now, not after the store's silence limit.
        for run in self.participants.values where run.ended == nil {
            for uploader in run.uploaders.values { uploader.storeDown(name) }
        }
        let reason = SnapshotAbortReason("participant \(name) died or left")
        for (id, directives) in self.initiator.participantDown(PeerID(name: name), reason: reason, now: .now) {
            await self.executeInitiator(id, directives)
        }
        // A restore asked here whose holder is gone fails (rolled back) now, not at its step's deadline.
        for run in Array(self.restores.keys) {
            guard var current = self.restores[run] else { continue }
            let directives = current.coordinator.holderDown(PeerID(name: name), now: .now)
            self.restores[run] = current
            await self.executeRestore(run, directives)
        }
        await self.takeOverOrphans()
    }

    /// Failover (DESIGN §6): when this peer is the initiator, takes over every snapshot it takes part in whose
    /// initiator is gone and that no initiator of this term has taken over yet. The new initiator asks the
    /// participants what they hold, then commits or aborts everywhere (`SnapshotInitiator(takingOver:)`).
    func takeOverOrphans() async {
        self.stopSupersededRuns()
        guard let first = try? await self.membership.view(), first.initiator == self.me else { return }
        for id in Array(self.participants.keys) {
            // Read again after every suspension: a run may have ended, been taken over, or this peer demoted.
            guard self.initiator.runs[id] == nil, let view = try? await self.membership.view(),
                view.initiator == self.me, self.initiator.runs[id] == nil, let run = self.participants[id]
            else { continue }
            let machine = run.machine
            guard view.alive[machine.initiator] == nil, view.term > (machine.takeoverTerm ?? machine.key.term) else {
                continue
            }
            // A snapshot that ended here may not have ended everywhere: its outcome is passed on.
            let successor = SnapshotInitiator<Instant>(
                takingOver: machine.key,
                term: view.term,
                me: self.me,
                plan: run.plan,
                holders: machine.holders,
                alive: Set(view.alive.keys),
                names: view.names,
                settings: self.settings,
                now: .now
            )
            self.logger.warning(
                "Taking over a snapshot whose initiator was lost",
                metadata: [
                    "snapshot.id": "\(id)", "snapshot.lostInitiator": "\(view.names[machine.initiator] ?? "?")",
                    "snapshot.term": "\(view.term)", "snapshot.phaseHere": "\(machine.phase)",
                ]
            )
            let directives = self.initiator.takeOver(successor, name: run.plan.name, term: view.term, now: .now)
            await self.executeInitiator(id, directives)
        }
    }

    /// An initiator whose snapshot a higher-term initiator took over (its `inquire` reached this peer's own
    /// participant) stops driving it: aborting it everywhere from here would contradict the successor's decision.
    /// Only that evidence counts: another peer merely being elected does not take a snapshot over.
    private func stopSupersededRuns() {
        for (id, participant) in self.participants {
            let local = participant.machine
            guard local.initiator != self.me, let successor = local.takeoverTerm,
                self.initiator.superseded(id, successorTerm: successor, now: .now)
            else { continue }
            self.logger.warning(
                "Snapshot taken over by a higher-term initiator: no longer driven from here",
                metadata: ["snapshot.id": "\(id)", "snapshot.term": "\(successor)"]
            )
        }
    }

    /// Carries out the directives of run `id` that the driver leaves to the shell.
    func executeInitiator(_ id: UInt64, _ directives: [SnapshotInitiator<Instant>.Directive]) async {
        self.notePhase(id)
        // Consecutive sends go out together (one event-loop turn, other peers first): see `send(snapshots:)`.
        var sends: [(SnapshotMessage, PeerID)] = []
        for (index, directive) in directives.enumerated() {
            switch directive {
            case .send(let message, let peer):
                sends.append((message, peer))
                if index + 1 < directives.count, case .send = directives[index + 1] { continue }
                // Not the marker resent while images stream (once a second).
                if self.initiator.runs[id]?.machine.phase == .cutting,
                    sends.contains(where: { if case .cut = $0.0.body { true } else { false } })
                {
                    // For cut skew: when the participants were asked, next to when they cut (`VM cut timed`).
                    self.logger.info(
                        "Cut requested",
                        metadata: [
                            "snapshot.id": "\(id)", "peer.count": "\(sends.count)",
                            "wall.us": "\(VMCutRunner.wallMicroseconds())",
                        ]
                    )
                }
                await self.membership.send(snapshots: sends)
                sends = []
            case .writeManifest(let cuts, let reports):
                await self.writeManifest(id, cuts: cuts, reports: reports)
            case .finished(let outcome):
                let started = self.initiatorPhases.removeValue(forKey: id)?.started ?? .now
                switch outcome {
                case .committed:
                    self.logger.info("Snapshot committed", metadata: ["snapshot.id": "\(id)"])
                    let manifest = try? await self.catalog.entry(id)?.manifest
                    PeerMetrics.snapshotEnded(committed: true, duration: started.duration(to: .now), manifest: manifest)
                case .aborted(let reason):
                    self.logger.warning(
                        "Snapshot aborted",
                        metadata: ["snapshot.id": "\(id)", "snapshot.reason": "\(reason)"]
                    )
                    _ = try? await self.catalog.abort(id, reason: reason.message)
                    PeerMetrics.snapshotEnded(committed: false, duration: started.duration(to: .now), manifest: nil)
                }
            case .scheduleTick(let at):
                self.schedule(at)
            }
        }
    }

    private func writeManifest(_ id: UInt64, cuts: [PeerID: [VMCutReport]], reports: [PeerID: [UInt8]]) async {
        guard let run = self.initiator.runs[id] else { return }
        let key = run.machine.key
        let result: Result<[UInt8], SnapshotError>
        do {
            var parsed: [SnapshotManifest.PeerReport] = []
            for (peer, bytes) in reports.sorted(by: { $0.key < $1.key }) {
                parsed.append(.init(peer: peer, report: try ParticipantReport.decode(bytes)))
            }
            // Fencing: a peer that is no longer the initiator (superseded while it waited) does not commit.
            let view = try await self.membership.view()
            guard view.initiator == self.me else {
                throw SnapshotError(.refused, "\(self.config.peer.name) is no longer the initiator (term \(view.term))")
            }
            guard parsed.contains(where: { !$0.report.vms.isEmpty }) else {
                throw SnapshotError(.refused, "no VM of VIOLIN \(key.violin) runs on any alive peer")
            }
            let manifest = SnapshotManifest.build(
                key: key,
                name: run.name,
                vni: run.machine.plan.vni,
                mode: run.machine.plan.mode,
                initiator: self.config.peer.name,
                cuts: cuts,
                reports: parsed,
                now: Self.wallNanoseconds()
            )
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let document = try encoder.encode(manifest)
            guard document.count <= SnapshotCodec.maximumBlobMessageSize - 200 else {
                throw SnapshotError(.refused, "the manifest (\(document.count) bytes) is too large for one message")
            }
            // The commit point: the manifest is durable in this peer's catalog.
            try await self.catalog.commit(manifest, document: document)
            result = .success(Array(document))
        } catch let error as SnapshotError {
            result = .failure(error)
        } catch {
            result = .failure(SnapshotError(.failed, "\(error)"))
        }
        let directives = self.initiator.manifest(
            id,
            result.mapError { SnapshotAbortReason($0.message) },
            now: .now
        )
        await self.executeInitiator(id, directives)
    }

    /// Times the phases of a snapshot initiated here: each one that ended goes to the metrics.
    private func notePhase(_ id: UInt64) {
        guard let phase = self.initiator.runs[id].map({ "\($0.machine.phase)" }) else { return }
        let now = Instant.now
        guard let noted = self.initiatorPhases[id] else {
            self.initiatorPhases[id] = (phase, now, now)
            return
        }
        guard noted.phase != phase else { return }
        PeerMetrics.phaseEnded(noted.phase, duration: noted.since.duration(to: now))
        self.initiatorPhases[id] = (phase, now, noted.started)
    }
}
