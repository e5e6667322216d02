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
        if let request = self.served[requestID] {
            // Taken over by a successor: silence sends the requester to follow the outcome as a participant.
            if self.initiators[request.snapshotID]?.superseded == true { return }
            return await self.answer(requestID, request.progress, to: message.from)
        }
        // One operation per VIOLIN (issue 13): the table is asked and answers with no suspension in between, so
        // two requests arriving together cannot both start.
        if let view = try? await self.membership.view(), self.refreshOperations(view), self.served[requestID] == nil {
            let operation = ViolinOperations<Instant>.Operation(
                id: requestID,
                kind: .snapshot,
                violin: message.key.violin,
                ownerName: view.names[message.from] ?? "\(message.from)"
            )
            switch self.operations!.table.request(operation, wait: wait, leased: false, now: .now) {  // !-safe, made above
            case .granted:
                // Later polls of this request are answered from here while it starts.
                let starting = SnapshotProgress(snapshotID: 0, phase: "preparing", finished: false)
                self.served[requestID] = ServedRequest(snapshotID: 0, progress: starting, at: .now)
            case .queued(let position, let behind):
                let waiting = SnapshotProgress(
                    snapshotID: 0,
                    phase: "queued",
                    finished: false,
                    message: ViolinOperations<Instant>.waitingMessage(
                        behind: ViolinOperations<Instant>.describe(behind),
                        kind: .snapshot,
                        position: position
                    )
                )
                return await self.answer(requestID, waiting, to: message.from)
            case .refused(let reason):
                let refused = SnapshotProgress(snapshotID: 0, phase: "refused", finished: true, message: reason)
                self.served[requestID] = ServedRequest(snapshotID: 0, progress: refused, at: .now)
                return await self.answer(requestID, refused, to: message.from)
            }
        } else if let request = self.served[requestID] {
            // A duplicate poll started it while this one waited for the view.
            return await self.answer(requestID, request.progress, to: message.from)
        }
        let progress: SnapshotProgress
        do {
            let id = try await self.startSnapshot(
                violin: message.key.violin,
                mode: mode,
                name: name,
                target: target,
                requestID: requestID,
                requester: message.from
            )
            progress = SnapshotProgress(snapshotID: id, phase: "preparing", finished: false)
            self.operations?.table.started(requestID, snapshot: id)
        } catch {
            self.operations?.table.release(requestID)
            progress = SnapshotProgress(snapshotID: 0, phase: "refused", finished: true, message: "\(error)")
        }
        self.served[requestID] = ServedRequest(snapshotID: progress.snapshotID, progress: progress, at: .now)
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
        requestID: UInt64,
        requester: PeerID
    ) async throws -> UInt64 {
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
        if let running = self.initiators.values.first(where: {
            $0.machine.key.violin == violin && $0.finished == nil
        }) {
            throw SnapshotError(.refused, "snapshot \(running.machine.key.id) of \(violin) is still in progress")
        }
        // The epoch must be past every VM's: past every snapshot of the VIOLIN this peer knows, and past its
        // own VMs' epochs (a participant whose VM is further refuses at prepare, naming it).
        let localEpochs = try await self.switchService.epochs()
        let highest = max(
            try await self.catalog.highestEpoch(violin: violin),
            self.initiators.values.filter { $0.machine.key.violin == violin }.map(\.machine.key.epoch).max() ?? 0,
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
        var machine = SnapshotInitiator<Instant>(key: key, me: self.me, plan: plan, settings: self.settings, now: .now)
        let directives = machine.start(now: .now)
        self.initiators[id] = InitiatorRun(machine: machine, name: name, requestID: requestID, requester: requester)
        self.logger.info(
            "Snapshot started",
            metadata: [
                "snapshot.id": "\(id)", "snapshot.violin": "\(violin)", "snapshot.epoch": "\(key.epoch)",
                "snapshot.mode": "\(mode.rawValue)", "snapshot.participants": "\(plan.participants.count)",
            ]
        )
        await self.executeInitiator(id, directives)
        return id
    }

    /// A member died or left: a snapshot it takes part in cannot complete (before its commit point); one it
    /// initiated is taken over by the next initiator.
    func handleMemberDown(_ name: String) async {
        let peer = PeerID(name: name)
        for id in Array(self.initiators.keys) {
            guard var run = self.initiators[id], !run.superseded else { continue }
            let directives = run.machine.participantDown(
                peer,
                reason: SnapshotAbortReason("participant \(name) died or left"),
                now: .now
            )
            self.initiators[id] = run
            await self.executeInitiator(id, directives)
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
            guard self.initiators[id] == nil, let view = try? await self.membership.view(), view.initiator == self.me,
                self.initiators[id] == nil, let run = self.participants[id]
            else { continue }
            let machine = run.machine
            guard view.alive[machine.initiator] == nil, view.term > (machine.takeoverTerm ?? machine.key.term) else {
                continue
            }
            // A snapshot that ended here may not have ended everywhere: its outcome is passed on.
            var initiator = SnapshotInitiator<Instant>(
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
            let directives = initiator.start(now: .now)
            self.initiators[id] = InitiatorRun(
                machine: initiator,
                name: run.plan.name,
                requestID: 0,
                requester: self.me
            )
            _ = self.refreshOperations(view)
            self.holdOwnSnapshot(id, snapshot: id, violin: machine.key.violin)
            await self.executeInitiator(id, directives)
        }
    }

    /// An initiator whose snapshot a higher-term initiator took over (its `inquire` reached this peer's own
    /// participant) stops driving it: aborting it everywhere from here would contradict the successor's decision.
    /// Only that evidence counts: another peer merely being elected does not take a snapshot over.
    private func stopSupersededRuns() {
        for (id, run) in self.initiators where run.finished == nil && !run.superseded {
            guard let local = self.participants[id]?.machine, let successor = local.takeoverTerm,
                successor > (run.machine.takeoverTerm ?? run.machine.key.term), local.initiator != self.me
            else { continue }
            self.initiators[id]?.superseded = true
            self.initiators[id]?.finished = .now
            self.operations?.table.release(Self.operationID(of: id, run))
            self.logger.warning(
                "Snapshot taken over by a higher-term initiator: no longer driven from here",
                metadata: ["snapshot.id": "\(id)", "snapshot.term": "\(successor)"]
            )
        }
    }

    func executeInitiator(_ id: UInt64, _ directives: [SnapshotInitiator<Instant>.Directive]) async {
        for directive in directives {
            switch directive {
            case .send(let message, let peer):
                await self.membership.send(snapshot: message, to: peer)
            case .writeManifest(let cuts, let reports):
                await self.writeManifest(id, cuts: cuts, reports: reports)
            case .finished(let outcome):
                guard var run = self.initiators[id] else { continue }
                run.finished = .now
                self.initiators[id] = run
                self.operations?.table.release(Self.operationID(of: id, run))
                switch outcome {
                case .committed:
                    self.logger.info("Snapshot committed", metadata: ["snapshot.id": "\(id)"])
                case .aborted(let reason):
                    self.logger.warning(
                        "Snapshot aborted",
                        metadata: ["snapshot.id": "\(id)", "snapshot.reason": "\(reason)"]
                    )
                    _ = try? await self.catalog.abort(id, reason: reason.message)
                }
            case .scheduleTick(let at):
                self.initiatorTicks[id] = at
                self.schedule(at)
            }
        }
        self.updateProgress(id)
    }

    /// Keeps what a requester's next poll is told in step with the initiator's phase.
    func updateProgress(_ id: UInt64) {
        guard let run = self.initiators[id], var request = self.served[run.requestID] else { return }
        let machine = run.machine
        let phase: String
        var message = ""
        var finished = false
        var blob: [UInt8] = []
        switch machine.phase {
        case .preparing: phase = "preparing"
        case .cutting: phase = "cutting"
        case .streaming: phase = "streaming"
        case .writingManifest: phase = "writing manifest"
        case .recovering: phase = "taking over"
        case .committing, .committed:
            phase = "committed"
            finished = true
            blob = machine.manifest
        case .aborting, .aborted:
            phase = "aborted"
            finished = true
            message = machine.abortReason?.message ?? "aborted"
        }
        if phase == "cutting" || phase == "streaming" {
            message = "\(machine.cuts.values.reduce(0) { $0 + $1.count }) VMs cut"
            if !run.streamed.isEmpty {
                // What each participant last said it wrote, raw / compressed.
                message += "; written MiB raw/stored: "
                message += run.streamed.values.sorted { $0.vm < $1.vm }.map {
                    "\($0.vm) \(ByteCount.mebibytes($0.rawBytes))/\(ByteCount.mebibytes($0.storedBytes))"
                }.joined(separator: ", ")
            }
        }
        request.progress = SnapshotProgress(
            snapshotID: id,
            phase: phase,
            finished: finished,
            message: message,
            blob: blob
        )
        self.served[run.requestID] = request
    }

    private func writeManifest(_ id: UInt64, cuts: [PeerID: [VMCutReport]], reports: [PeerID: [UInt8]]) async {
        guard let run = self.initiators[id] else { return }
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
        guard var current = self.initiators[id] else { return }
        let directives: [SnapshotInitiator<Instant>.Directive]
        switch result {
        case .success(let document): directives = current.machine.manifestWritten(document, now: .now)
        case .failure(let error): directives = current.machine.manifestFailed(error.message, now: .now)
        }
        self.initiators[id] = current
        await self.executeInitiator(id, directives)
    }
}
