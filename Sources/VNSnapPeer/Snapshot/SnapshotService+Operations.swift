import Logging
import VNSnapCore

/// Operations on a VIOLIN serialised by the initiator (issue 13, `ViolinOperations`): the initiator's table, and
/// the asking side used by `restore` and `delete` on any peer.
extension SnapshotService {
    /// An ask for an operation (or its renewal) from any peer, answered with the table's decision.
    func serveOperation(_ message: SnapshotMessage, kind: ViolinOperationKind, snapshot: UInt64, wait: Bool, held: Bool)
        async
    {
        guard let view = try? await self.membership.view() else { return }
        let inOffice = self.initiator.holdsOffice(initiator: view.initiator, term: view.term, now: .now)
        let operation = ViolinOperations<Instant>.Operation(
            id: message.key.id,
            kind: kind,
            violin: message.key.violin,
            snapshot: snapshot,
            ownerName: view.names[message.from] ?? "\(message.from)"
        )
        // Not the initiator (any more): silence sends the asker to the one it sees next.
        guard let answer = self.initiator.operation(operation, wait: wait, held: held, inOffice: inOffice, now: .now)
        else { return }
        if case .granted = answer, !held {
            self.logger.info(
                "Operation granted",
                metadata: [
                    "operation.id": "\(operation.id)", "operation.kind": "\(kind)",
                    "snapshot.violin": "\(operation.violin)",
                    "snapshot.id": "\(snapshot)", "operation.owner": "\(operation.ownerName)",
                ]
            )
        }
        let key = SnapshotKey(id: message.key.id, violin: message.key.violin, epoch: 0, term: view.term)
        await self.membership.send(
            snapshot: SnapshotMessage(key: key, from: self.me, body: .operationAnswer(answer)),
            to: message.from
        )
    }

    /// Lapses the leases of operations whose owners fell silent.
    func expireOperations(now: Instant) {
        for operation in self.initiator.expire(now: now) {
            self.logger.warning(
                "Operation lease lapsed: its owner fell silent",
                metadata: [
                    "operation.id": "\(operation.id)", "operation.kind": "\(operation.kind)",
                    "snapshot.violin": "\(operation.violin)", "operation.owner": "\(operation.ownerName)",
                ]
            )
        }
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Asking

    /// Runs `body` as an operation on `violin` granted by the initiator (`acquireOperation`), and tells the
    /// initiator when it has ended, however it ended. `body` gets the operation's id.
    func withOperation<T: Sendable>(
        _ kind: ViolinOperationKind,
        violin: String,
        snapshot: UInt64,
        wait: Bool,
        progress: @escaping @Sendable (String) async -> Void = { _ in },
        timeout: Duration = .seconds(600),
        _ body: (UInt64) async throws -> T
    ) async throws -> T {
        let id = UInt64.random(in: 1...UInt64(Int64.max))
        try await self.acquireOperation(
            id,
            kind: kind,
            violin: violin,
            snapshot: snapshot,
            wait: wait,
            progress: progress,
            timeout: timeout
        )
        let result: Result<T, any Error>
        do {
            result = .success(try await body(id))
        } catch {
            result = .failure(error)
        }
        await self.releaseOperation(id, violin: violin)
        return try result.get()
    }

    /// Asks the initiator for operation `id` on `violin` and waits until it is granted (reporting its place in
    /// the queue through `progress`), or throws why it was refused. Every ask goes to the initiator as this peer
    /// sees it then, so a change of initiator does not lose the ask.
    func acquireOperation(
        _ id: UInt64,
        kind: ViolinOperationKind,
        violin: String,
        snapshot: UInt64,
        wait: Bool,
        progress: @escaping @Sendable (String) async -> Void,
        timeout: Duration = .seconds(600)
    ) async throws {
        self.awaitedOperations[id] = .some(nil)
        defer { self.awaitedOperations[id] = nil }
        let deadline = ContinuousClock.now + timeout
        var lastQueued = ""
        var heardAt = ContinuousClock.now
        while ContinuousClock.now < deadline {
            let view = try await self.membership.view()
            guard let initiator = view.initiator else {
                throw SnapshotError(
                    .refused,
                    "no initiator: this peer does not see a majority of the cluster, and \(kind)s are serialised by the initiator (see `vnsnap-peer status`)"
                )
            }
            await self.sendOperation(id, violin: violin, to: initiator, term: view.term) {
                .operation(kind: kind, snapshot: snapshot, wait: wait, held: false)
            }
            try await Task.sleep(for: .milliseconds(200))
            guard case .some(.some(let answer)) = self.awaitedOperations[id] else {
                if heardAt.duration(to: .now) > .seconds(10) {
                    throw SnapshotError(
                        .timeout,
                        "the initiator \(view.names[initiator] ?? "\(initiator)") does not answer"
                    )
                }
                continue
            }
            heardAt = .now
            self.awaitedOperations[id] = .some(nil)
            switch answer {
            case .granted:
                return
            case .refused(let reason):
                throw SnapshotError(.refused, reason)
            case .queued(let position, let behind):
                let line = ViolinOperations<Instant>.waitingMessage(behind: behind, kind: kind, position: position)
                if line != lastQueued {
                    lastQueued = line
                    await progress(line)
                }
            }
        }
        throw SnapshotError(.timeout, "gave up waiting for \(violin) after \(Int(timeout.inSeconds)) s")
    }

    /// Renews a granted operation's lease with the initiator as this peer sees it now.
    func renewOperation(_ id: UInt64, kind: ViolinOperationKind, violin: String, snapshot: UInt64) async {
        guard let view = try? await self.membership.view(), let initiator = view.initiator else { return }
        await self.sendOperation(id, violin: violin, to: initiator, term: view.term) {
            .operation(kind: kind, snapshot: snapshot, wait: true, held: true)
        }
    }

    /// Tells the initiator that operation `id` has ended (twice: a lost datagram would hold the VIOLIN until
    /// its lease lapses).
    func releaseOperation(_ id: UInt64, violin: String) async {
        guard let view = try? await self.membership.view(), let initiator = view.initiator else { return }
        for _ in 0..<2 {
            await self.sendOperation(id, violin: violin, to: initiator, term: view.term) { .operationDone }
        }
    }

    private func sendOperation(
        _ id: UInt64,
        violin: String,
        to peer: PeerID,
        term: UInt64,
        body: () -> SnapshotMessage.Body
    ) async {
        let key = SnapshotKey(id: id, violin: violin, epoch: 0, term: term)
        await self.membership.send(snapshot: SnapshotMessage(key: key, from: self.me, body: body()), to: peer)
    }
}
