/// What an operation on a VIOLIN does.
public enum ViolinOperationKind: UInt8, Sendable, Hashable, Codable {
    /// Takes a snapshot of the VIOLIN (driven by the initiator itself).
    case snapshot = 1
    /// Restores a snapshot of the VIOLIN (driven by the peer where `restore` ran).
    case restore = 2
    /// Deletes a snapshot of the VIOLIN (serialised only with what uses that snapshot).
    case delete = 3
}

/// The initiator's serialisation of the operations on each VIOLIN (issue 13): one snapshot or restore of a
/// VIOLIN at a time, the others queued in arrival order (or refused at once, naming what runs, when the asker does
/// not wait); a snapshot that a restore uses is pinned, so deleting it is refused until the restore has ended, and
/// a snapshot being deleted cannot be restored.
///
/// An operation driven by another peer (a restore, a delete) is a lease its owner renews by asking again: a dead
/// owner frees the VIOLIN after `lease`. A queued asker keeps its place by asking again too: one silent for
/// `waiterSilence` is forgotten. A new initiator knows nothing of its predecessor's holds: for `grace` after it
/// took office it grants only operations whose owners say they already held them, and queues the rest, so a
/// restore under way keeps the VIOLIN across a change of initiator.
///
/// Pure: time is a parameter; the shell asks, releases and ticks.
public struct ViolinOperations<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// What an operation does.
    public typealias Kind = ViolinOperationKind

    /// One operation, as asked.
    public struct Operation: Sendable, Hashable {
        /// Its id: the request's (snapshot), the restore's run, the delete's.
        public var id: UInt64
        /// What it does.
        public var kind: Kind
        /// The VIOLIN it works on.
        public var violin: String
        /// The snapshot it uses (restore, delete), or takes once started (snapshot; 0 before).
        public var snapshot: UInt64
        /// The peer that asked for it, by name (for messages).
        public var ownerName: String

        /// Creates an operation.
        public init(id: UInt64, kind: Kind, violin: String, snapshot: UInt64 = 0, ownerName: String) {
            self.id = id
            self.kind = kind
            self.violin = violin
            self.snapshot = snapshot
            self.ownerName = ownerName
        }

        /// What it is, for the operator: `a restore of snapshot 12 of pipeline (asked on h3)`.
        public var summary: String {
            switch self.kind {
            case .snapshot:
                let id = self.snapshot == 0 ? "" : " (id \(self.snapshot))"
                return "a snapshot of \(self.violin)\(id), asked on \(self.ownerName)"
            case .restore:
                return "a restore of snapshot \(self.snapshot) of \(self.violin), asked on \(self.ownerName)"
            case .delete:
                return "a delete of snapshot \(self.snapshot) of \(self.violin), asked on \(self.ownerName)"
            }
        }
    }

    /// The answer to an ask.
    public enum Decision: Sendable, Hashable {
        /// It may run now (or keeps running: a renewal).
        case granted
        /// It waits: `position` (1 = next) behind `behind` (what runs, or waits first), or, in a new initiator's
        /// grace, behind whatever its predecessor granted (`nil`).
        case queued(position: Int, behind: Operation?)
        /// It may not run, and why (for the operator).
        case refused(String)
    }

    struct Hold: Sendable, Hashable {
        var operation: Operation
        /// When a leased hold lapses unless renewed; `nil` for the initiator's own snapshots (released explicitly).
        var expires: Instant?
    }

    struct Waiter: Sendable, Hashable {
        var operation: Operation
        var lastSeen: Instant
    }

    /// What runs on each VIOLIN.
    var holds: [String: Hold] = [:]
    /// Deletes under way, by snapshot.
    var deletes: [UInt64: Hold] = [:]
    /// Who waits for each VIOLIN, in arrival order.
    var waiting: [String: [Waiter]] = [:]
    let lease: Duration
    let waiterSilence: Duration
    let graceUntil: Instant

    /// A new initiator's table, empty, taking office at `now`.
    public init(
        now: Instant,
        lease: Duration = .seconds(10),
        waiterSilence: Duration = .seconds(5),
        grace: Duration = .seconds(3)
    ) {
        self.lease = lease
        self.waiterSilence = waiterSilence
        self.graceUntil = now.advanced(by: grace)
    }

    /// What runs on `violin`, if anything.
    public func running(on violin: String) -> Operation? {
        self.holds[violin]?.operation
    }

    /// The operation using snapshot `id` (a restore of it, or its delete), if any.
    public func user(of snapshot: UInt64) -> Operation? {
        if let delete = self.deletes[snapshot] { return delete.operation }
        return self.holds.values.first { $0.operation.kind == .restore && $0.operation.snapshot == snapshot }?
            .operation
    }

    /// Asks for `operation`, or renews it (the same id). `wait`: queue behind what runs instead of being refused.
    /// `leased`: its owner is another peer (or the shell on its behalf) that renews it; the initiator's own
    /// snapshots are not. `held`: the owner already held it from a previous initiator (honoured in the grace).
    public mutating func request(
        _ operation: Operation,
        wait: Bool,
        leased: Bool,
        held: Bool = false,
        now: Instant
    ) -> Decision {
        self.expire(now: now)
        let expires = leased ? now.advanced(by: self.lease) : nil
        if operation.kind == .delete { return self.requestDelete(operation, expires: expires) }
        let violin = operation.violin
        if let current = self.holds[violin] {
            if current.operation.id == operation.id {
                if leased { self.holds[violin]?.expires = expires }
                return .granted
            }
            return self.queueOrRefuse(operation, behind: current.operation, wait: wait, now: now)
        }
        if operation.kind == .restore, let delete = self.deletes[operation.snapshot] {
            self.dropWaiter(operation.id, violin: violin)
            return .refused("snapshot \(operation.snapshot) is being deleted (\(delete.operation.summary))")
        }
        let inGrace = now < self.graceUntil
        let first = self.waiting[violin]?.first?.operation.id
        if held || (!inGrace && (first == nil || first == operation.id)) {
            self.dropWaiter(operation.id, violin: violin)
            self.holds[violin] = Hold(operation: operation, expires: expires)
            return .granted
        }
        // Free, but someone waited first (or a predecessor's holders may still come forward): wait your turn.
        guard wait else {
            let reason =
                inGrace
                ? "the initiator has just changed; operations already under way get \(violin) first (ask again)"
                : "\(self.waiting[violin]?.first.map(\.operation.summary) ?? "another operation") waits for \(violin) first"
            return .refused(reason)
        }
        let position = self.enqueue(operation, now: now)
        let ahead = self.waiting[violin]?.first { $0.operation.id != operation.id }?.operation
        return .queued(position: position, behind: ahead)
    }

    /// What a queued asker is told: `waiting: <behind> (this restore is next)`; `behind` is what it waits for.
    public static func waitingMessage(behind: String, kind: Kind, position: Int) -> String {
        "waiting: \(behind) (this \(kind) is \(position == 1 ? "next" : "number \(position) in line"))"
    }

    /// What a queued operation waits for, for people.
    public static func describe(_ behind: Operation?) -> String {
        behind?.summary ?? "operations the previous initiator granted (the initiator has just changed)"
    }

    /// The snapshot id a granted snapshot request took (for messages and pins).
    public mutating func started(_ id: UInt64, snapshot: UInt64) {
        for (violin, hold) in self.holds where hold.operation.id == id {
            self.holds[violin]?.operation.snapshot = snapshot
        }
    }

    /// `id` has ended (or was given up): its VIOLIN or snapshot is free for the next.
    public mutating func release(_ id: UInt64) {
        for (violin, hold) in self.holds where hold.operation.id == id { self.holds[violin] = nil }
        for (snapshot, hold) in self.deletes where hold.operation.id == id { self.deletes[snapshot] = nil }
        for violin in self.waiting.keys { self.dropWaiter(id, violin: violin) }
    }

    /// Lapses leases not renewed and forgets waiters that stopped asking; returns the lapsed operations.
    @discardableResult
    public mutating func expire(now: Instant) -> [Operation] {
        var lapsed: [Operation] = []
        for (violin, hold) in self.holds {
            if let expires = hold.expires, now >= expires {
                lapsed.append(hold.operation)
                self.holds[violin] = nil
            }
        }
        for (snapshot, hold) in self.deletes {
            if let expires = hold.expires, now >= expires {
                lapsed.append(hold.operation)
                self.deletes[snapshot] = nil
            }
        }
        for (violin, waiters) in self.waiting {
            let kept = waiters.filter { $0.lastSeen.advanced(by: self.waiterSilence) > now }
            self.waiting[violin] = kept.isEmpty ? nil : kept
        }
        return lapsed.sorted { $0.id < $1.id }
    }

    private mutating func requestDelete(_ operation: Operation, expires: Instant?) -> Decision {
        if let current = self.deletes[operation.snapshot] {
            guard current.operation.id == operation.id else {
                return .refused(
                    "snapshot \(operation.snapshot) is already being deleted (\(current.operation.summary))"
                )
            }
            self.deletes[operation.snapshot]?.expires = expires
            return .granted
        }
        if let user = self.holds.values.first(where: {
            $0.operation.snapshot == operation.snapshot && $0.operation.kind == .restore
        }) {
            return .refused(
                "snapshot \(operation.snapshot) is in use by \(user.operation.summary); delete it when that has ended"
            )
        }
        self.deletes[operation.snapshot] = Hold(operation: operation, expires: expires)
        return .granted
    }

    private mutating func queueOrRefuse(_ operation: Operation, behind: Operation, wait: Bool, now: Instant)
        -> Decision
    {
        guard wait else {
            self.dropWaiter(operation.id, violin: operation.violin)
            return .refused("\(behind.summary) is in progress")
        }
        return .queued(position: self.enqueue(operation, now: now), behind: behind)
    }

    /// Puts `operation` in its VIOLIN's queue (or keeps its place); returns its position, 1 first.
    private mutating func enqueue(_ operation: Operation, now: Instant) -> Int {
        var waiters = self.waiting[operation.violin] ?? []
        if let index = waiters.firstIndex(where: { $0.operation.id == operation.id }) {
            waiters[index].lastSeen = now
            self.waiting[operation.violin] = waiters
            return index + 1
        }
        waiters.append(Waiter(operation: operation, lastSeen: now))
        self.waiting[operation.violin] = waiters
        return waiters.count
    }

    private mutating func dropWaiter(_ id: UInt64, violin: String) {
        guard let waiters = self.waiting[violin] else { return }
        let kept = waiters.filter { $0.operation.id != id }
        self.waiting[violin] = kept.isEmpty ? nil : kept
    }
}
