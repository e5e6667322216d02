/// The initiator's side of one peer (DESIGN §6, issue 13): the snapshots it drives, what it tells the peers that
/// asked for them, and, while it holds office, the per-VIOLIN operation table (`ViolinOperations`).
///
/// Pure: the shell hands it requests, asks, messages, ticks and members going down, with the time; it answers with
/// decisions and the machines' directives it must carry out (`send`, `writeManifest`, `finished`), having already
/// kept its own books (ticks, holds released, what the requester's next poll is told). Planning a snapshot needs
/// the switch and the catalog, so the shell does that between `request` (→ `.start`) and `started` or
/// `notStarted`.
public struct InitiatorDriver<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// The directives of the machines it drives.
    public typealias Directive = SnapshotInitiator<Instant>.Directive

    /// One snapshot driven from here.
    public struct Run: Sendable {
        /// Its protocol.
        public var machine: SnapshotInitiator<Instant>
        /// Its name, as asked.
        public var name: String
        /// The request that started it (0 when taken over).
        public var requestID: UInt64
        /// When it ended here.
        public var finished: Instant?
        /// The last bytes written per VM, as participants report them while streaming.
        public var streamed: [String: VMStreamedBytes] = [:]
        /// A higher-term initiator took it over before its commit point: no longer driven from here.
        public var superseded = false

        /// The id under which it holds its VIOLIN in the table: its request's, or its own when taken over.
        var operationID: UInt64 { self.requestID == 0 ? self.machine.key.id : self.requestID }
    }

    /// What a request (or its poll) gets.
    public enum RequestDecision: Sendable, Hashable {
        /// Tell the requester this.
        case answer(SnapshotProgress)
        /// Say nothing: the request is followed elsewhere (a successor took its snapshot over).
        case silent
        /// Granted: plan and start the snapshot, then call `started` (or `notStarted`).
        case start
        /// This peer is not the initiator: the shell refuses it, naming the one that is.
        case notInitiator
    }

    struct Served: Sendable {
        var snapshotID: UInt64
        var progress: SnapshotProgress
        var at: Instant
    }

    /// This peer.
    public let me: PeerID
    /// Its name, as owner of the snapshots it drives.
    public let myName: String
    /// The snapshots driven from here, by id (ended ones kept a while, for late messages and polls).
    public private(set) var runs: [UInt64: Run] = [:]
    var served: [UInt64: Served] = [:]
    /// While this peer is the initiator: the operation table, for the term it was made in.
    var office: (term: UInt64, table: ViolinOperations<Instant>)?
    /// When each run asked to be ticked next.
    var ticks: [UInt64: Instant] = [:]

    /// An idle initiator side for peer `me`.
    public init(me: PeerID, myName: String) {
        self.me = me
        self.myName = myName
    }

    /// The operation table, while in office.
    public var operations: ViolinOperations<Instant>? { self.office?.table }

    /// The earliest tick a run asked for.
    public var nextTick: Instant? { self.ticks.values.min() }

    /// The unfinished run on `violin`, if any.
    public func running(on violin: String) -> Run? {
        self.runs.values.first { $0.machine.key.violin == violin && $0.finished == nil }
    }

    /// The highest epoch of any run on `violin`.
    public func highestEpoch(of violin: String) -> UInt32 {
        self.runs.values.filter { $0.machine.key.violin == violin }.map(\.machine.key.epoch).max() ?? 0
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Office

    /// Whether this peer holds office (the elected `initiator` is `me`); taking office in a new term makes a fresh
    /// table with this peer's own unfinished runs held in it.
    public mutating func holdsOffice(initiator: PeerID?, term: UInt64, now: Instant) -> Bool {
        guard initiator == self.me else {
            self.office = nil
            return false
        }
        if self.office?.term == term { return true }
        self.office = (term, ViolinOperations(now: now))
        for run in self.runs.values where run.finished == nil && !run.superseded {
            self.hold(run, now: now)
        }
        return true
    }

    /// Records a run this initiator already drives as holding its VIOLIN.
    mutating func hold(_ run: Run, now: Instant) {
        let operation = ViolinOperations<Instant>.Operation(
            id: run.operationID,
            kind: .snapshot,
            violin: run.machine.key.violin,
            snapshot: run.machine.key.id,
            ownerName: self.myName
        )
        _ = self.office?.table.request(operation, wait: false, leased: false, held: true, now: now)
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Requests

    /// A snapshot request (or its poll) `id` for `violin` from `ownerName`; `inOffice` as `holdsOffice` said.
    public mutating func request(
        _ id: UInt64,
        violin: String,
        ownerName: String,
        wait: Bool,
        inOffice: Bool,
        now: Instant
    ) -> RequestDecision {
        if let request = self.served[id] {
            // Taken over by a successor: silence sends the requester to follow the outcome as a participant.
            if self.runs[request.snapshotID]?.superseded == true { return .silent }
            return .answer(request.progress)
        }
        guard inOffice, self.office != nil else { return .notInitiator }
        let operation = ViolinOperations<Instant>.Operation(
            id: id,
            kind: .snapshot,
            violin: violin,
            ownerName: ownerName
        )
        switch self.office!.table.request(operation, wait: wait, leased: false, now: now) {  // !-safe, checked above
        case .granted:
            // Later polls are answered from here while it starts.
            self.record(id, SnapshotProgress(snapshotID: 0, phase: "preparing", finished: false), now: now)
            return .start
        case .queued(let position, let behind):
            let message = ViolinOperations<Instant>.waitingMessage(
                behind: ViolinOperations<Instant>.describe(behind),
                kind: .snapshot,
                position: position
            )
            return .answer(SnapshotProgress(snapshotID: 0, phase: "queued", finished: false, message: message))
        case .refused(let reason):
            return .answer(self.refuse(id, reason, now: now))
        }
    }

    /// The snapshot of request `requestID` started as `machine`: it holds its VIOLIN until it ends. Returns the
    /// start's directives for the shell.
    public mutating func started(
        _ machine: SnapshotInitiator<Instant>,
        name: String,
        requestID: UInt64,
        now: Instant
    ) -> [Directive] {
        var machine = machine
        let id = machine.key.id
        let directives = machine.start(now: now)
        self.runs[id] = Run(machine: machine, name: name, requestID: requestID)
        self.office?.table.started(requestID, snapshot: id)
        self.record(requestID, SnapshotProgress(snapshotID: id, phase: "preparing", finished: false), now: now)
        return self.books(id, directives, now: now)
    }

    /// The snapshot of request `requestID` could not start, for `reason`: its hold is released. Returns what
    /// the requester is told.
    public mutating func notStarted(_ requestID: UInt64, reason: String, now: Instant) -> SnapshotProgress {
        self.office?.table.release(requestID)
        return self.refuse(requestID, reason, now: now)
    }

    /// A snapshot whose initiator was lost, taken over from here as `machine` (the office of `term`, so a
    /// fresh table when this peer just took office). Returns the start's directives.
    public mutating func takeOver(_ machine: SnapshotInitiator<Instant>, name: String, term: UInt64, now: Instant)
        -> [Directive]
    {
        var machine = machine
        let id = machine.key.id
        let directives = machine.start(now: now)
        let run = Run(machine: machine, name: name, requestID: 0)
        self.runs[id] = run
        _ = self.holdsOffice(initiator: self.me, term: term, now: now)
        self.hold(run, now: now)
        return self.books(id, directives, now: now)
    }

    /// What request `id`'s next poll is told, if it is known here.
    public func progress(ofRequest id: UInt64) -> SnapshotProgress? {
        self.served[id]?.progress
    }

    mutating func record(_ requestID: UInt64, _ progress: SnapshotProgress, now: Instant) {
        self.served[requestID] = Served(snapshotID: progress.snapshotID, progress: progress, at: now)
    }

    mutating func refuse(_ requestID: UInt64, _ reason: String, now: Instant) -> SnapshotProgress {
        let refused = SnapshotProgress(snapshotID: 0, phase: "refused", finished: true, message: reason)
        self.record(requestID, refused, now: now)
        return refused
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Operations asked by other peers

    /// An ask (or renewal) of an operation from another peer; `nil` when this peer is not the initiator (silence
    /// sends the asker to the one it sees next).
    public mutating func operation(
        _ operation: ViolinOperations<Instant>.Operation,
        wait: Bool,
        held: Bool,
        inOffice: Bool,
        now: Instant
    ) -> OperationAnswer? {
        guard inOffice, self.office != nil else { return nil }
        switch self.office!.table.request(operation, wait: wait, leased: true, held: held, now: now) {  // !-safe
        case .granted: return .granted
        case .queued(let position, let behind):
            return .queued(position: position, behind: ViolinOperations<Instant>.describe(behind))
        case .refused(let reason): return .refused(reason)
        }
    }

    /// Operation `id` has ended (its owner said so).
    public mutating func operationDone(_ id: UInt64) {
        self.office?.table.release(id)
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Protocol events

    /// A message of the protocol for run `message.key.id`.
    public mutating func onMessage(_ message: SnapshotMessage, now: Instant) -> [Directive] {
        let id = message.key.id
        guard var run = self.runs[id], !run.superseded else { return [] }
        let directives = run.machine.onMessage(message, now: now)
        self.runs[id] = run
        return self.books(id, directives, now: now)
    }

    /// A participant's streamed bytes, for the requester's progress.
    public mutating func streamed(_ id: UInt64, _ counts: [VMStreamedBytes]) {
        guard self.runs[id] != nil else { return }
        for count in counts { self.runs[id]?.streamed[count.vm] = count }
        self.updateProgress(id)
    }

    /// The manifest of run `id` was written (`.success`) or could not be (`.failure` with the reason).
    public mutating func manifest(_ id: UInt64, _ result: Result<[UInt8], SnapshotAbortReason>, now: Instant)
        -> [Directive]
    {
        guard var run = self.runs[id] else { return [] }
        let directives: [Directive]
        switch result {
        case .success(let document): directives = run.machine.manifestWritten(document, now: now)
        case .failure(let reason): directives = run.machine.manifestFailed(reason.message, now: now)
        }
        self.runs[id] = run
        return self.books(id, directives, now: now)
    }

    /// Ticks the runs whose time has come, with the directives of each.
    public mutating func tick(now: Instant) -> [(id: UInt64, directives: [Directive])] {
        var out: [(id: UInt64, directives: [Directive])] = []
        for (id, at) in self.ticks where at <= now {
            self.ticks[id] = nil
            guard var run = self.runs[id], !run.superseded else { continue }
            let directives = run.machine.onTick(now: now)
            self.runs[id] = run
            out.append((id, self.books(id, directives, now: now)))
        }
        return out
    }

    /// A participant died or left: the runs it takes part in learn it.
    public mutating func participantDown(_ peer: PeerID, reason: SnapshotAbortReason, now: Instant)
        -> [(id: UInt64, directives: [Directive])]
    {
        var out: [(id: UInt64, directives: [Directive])] = []
        for id in self.runs.keys.sorted() {
            guard var run = self.runs[id], !run.superseded else { continue }
            let directives = run.machine.participantDown(peer, reason: reason, now: now)
            self.runs[id] = run
            out.append((id, self.books(id, directives, now: now)))
        }
        return out
    }

    /// A higher-term initiator (of `successorTerm`) took run `id` over: it is no longer driven from here, and its
    /// VIOLIN is released. Returns whether that is news.
    public mutating func superseded(_ id: UInt64, successorTerm: UInt64, now: Instant) -> Bool {
        guard let run = self.runs[id], run.finished == nil, !run.superseded,
            successorTerm > (run.machine.takeoverTerm ?? run.machine.key.term)
        else { return false }
        self.runs[id]?.superseded = true
        self.runs[id]?.finished = now
        self.ticks[id] = nil
        self.office?.table.release(run.operationID)
        return true
    }

    /// Lapses the leases of operations whose owners fell silent; returns them.
    public mutating func expire(now: Instant) -> [ViolinOperations<Instant>.Operation] {
        self.office?.table.expire(now: now) ?? []
    }

    /// Forgets runs ended over ten minutes ago and requests answered over an hour ago.
    public mutating func forget(now: Instant) {
        for (id, run) in self.runs {
            if let finished = run.finished, finished.duration(to: now) > .seconds(600) {
                self.runs[id] = nil
                self.ticks[id] = nil
            }
        }
        for (id, request) in self.served where request.at.duration(to: now) > .seconds(3600) {
            self.served[id] = nil
        }
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Books

    /// Keeps the books a run's directives ask for (ticks, the end: its hold released) and the requester's
    /// progress; returns the directives for the shell (`scheduleTick` included, so it can arrange a wake-up).
    mutating func books(_ id: UInt64, _ directives: [Directive], now: Instant) -> [Directive] {
        for directive in directives {
            switch directive {
            case .scheduleTick(let at):
                self.ticks[id] = at
            case .finished:
                guard let run = self.runs[id] else { continue }
                self.runs[id]?.finished = now
                self.office?.table.release(run.operationID)
            case .send, .writeManifest:
                break
            }
        }
        self.updateProgress(id)
        return directives
    }

    /// Keeps what the requester's next poll is told in step with the run's phase.
    mutating func updateProgress(_ id: UInt64) {
        guard let run = self.runs[id], var request = self.served[run.requestID] else { return }
        request.progress = Self.progress(of: run)
        self.served[run.requestID] = request
    }

    /// Where `run` stands, for the requester.
    static func progress(of run: Run) -> SnapshotProgress {
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
        return SnapshotProgress(
            snapshotID: machine.key.id,
            phase: phase,
            finished: finished,
            message: message,
            blob: blob
        )
    }
}
