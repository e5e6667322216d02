/// The initiator's side of one snapshot (DESIGN §6): prepare → cut → stream → commit, or abort.
///
/// Pure: messages and ticks come in with the time, directives go out. Requests (prepare, cut, commit, abort)
/// are resent every `retransmitInterval` to the participants that have not answered; every phase has a
/// deadline, and missing it before the commit point aborts the snapshot everywhere. The commit point is the
/// shell's `manifestWritten`: from then on the snapshot exists and can no longer be aborted.
public struct SnapshotInitiator<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// Where the snapshot stands.
    public enum Phase: Sendable, Hashable {
        case preparing, cutting, streaming, writingManifest, committing, aborting, committed, aborted
        /// A new initiator taking over a lost one's snapshot: asking the participants what they hold.
        case recovering
    }

    /// How it ended.
    public enum Outcome: Sendable, Hashable {
        case committed
        case aborted(SnapshotAbortReason)
    }

    /// What the shell must do.
    public enum Directive: Sendable, Hashable {
        /// Send `message` to `peer`.
        case send(SnapshotMessage, to: PeerID)
        /// Every image is durable: write the manifest with these cuts and the participants' durable reports
        /// durably, then call `manifestWritten` (or `manifestFailed`).
        case writeManifest(cuts: [PeerID: [VMCutReport]], reports: [PeerID: [UInt8]])
        /// The protocol is over (every participant answered, or the settle timeout passed).
        case finished(Outcome)
        /// Call `onTick` at this time.
        case scheduleTick(at: Instant)
    }

    /// Which snapshot.
    public let key: SnapshotKey
    /// The initiator itself.
    public let me: PeerID
    /// Who takes part.
    public let plan: SnapshotPlan
    /// Timing.
    public let settings: SnapshotSettings
    /// The current phase.
    public private(set) var phase: Phase
    /// Cut reports received so far.
    public private(set) var cuts: [PeerID: [VMCutReport]] = [:]
    /// Why it aborts, once it does.
    public private(set) var abortReason: SnapshotAbortReason?
    /// The durable reports received so far.
    public private(set) var reports: [PeerID: [UInt8]] = [:]
    /// The manifest, once written.
    public private(set) var manifest: [UInt8] = []
    var answered: Set<PeerID> = []
    var durable: Set<PeerID> = []
    var deadline: Instant
    var nextRetransmit: Instant
    /// Taking over (`recovering`): this initiator's term, what each participant holds, who is alive, names.
    public private(set) var takeoverTerm: UInt64?
    var holdings: [PeerID: SnapshotRecovery.Holding] = [:]
    /// Participants running VMs of the VIOLIN (from their `prepared`, or as a participant of the lost
    /// initiator's snapshot heard them with the marker); `nil` taking over without that knowledge.
    public private(set) var holders: Set<PeerID> = []
    var knownHolders: Set<PeerID>?
    var waitingForStreams = false
    var alive: Set<PeerID> = []
    var names: [PeerID: String] = [:]

    /// A new snapshot; nothing is sent until `start`.
    public init(
        key: SnapshotKey,
        me: PeerID,
        plan: SnapshotPlan,
        settings: SnapshotSettings = SnapshotSettings(),
        now: Instant
    ) {
        precondition(!plan.participants.isEmpty, "a snapshot needs participants")
        self.key = key
        self.me = me
        self.plan = plan
        self.settings = settings
        self.phase = .preparing
        self.deadline = now.advanced(by: settings.prepareTimeout)
        self.nextRetransmit = now.advanced(by: settings.retransmitInterval)
    }

    /// A new initiator of `term` taking over `key`, whose initiator was lost (DESIGN §6, failover): it asks the
    /// `alive` participants what they hold and decides with `SnapshotRecovery` — commit with a manifest someone
    /// saw, build one from every holder's durable report, or abort everywhere.
    public init(
        takingOver key: SnapshotKey,
        term: UInt64,
        me: PeerID,
        plan: SnapshotPlan,
        holders: Set<PeerID>?,
        alive: Set<PeerID>,
        names: [PeerID: String] = [:],
        settings: SnapshotSettings = SnapshotSettings(),
        now: Instant
    ) {
        precondition(term > key.term, "a takeover needs a higher term than the snapshot's")
        self.init(key: key, me: me, plan: plan, settings: settings, now: now)
        self.phase = .recovering
        self.takeoverTerm = term
        self.knownHolders = holders
        self.alive = alive
        self.names = names
    }

    /// Sends `prepare` to every participant (or, taking over, `inquire` to the alive ones).
    public mutating func start(now: Instant) -> [Directive] {
        if self.phase == .recovering, let term = self.takeoverTerm {
            var directives = self.request(.inquire(term: term), to: self.plan.participants.intersection(self.alive))
            directives += self.decideRecovery(now: now)
            directives.append(.scheduleTick(at: self.nextDeadline))
            return directives
        }
        var directives = self.request(.prepare(self.plan), to: self.plan.participants)
        directives.append(.scheduleTick(at: self.nextDeadline))
        return directives
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Events

    /// An answer from a participant; messages of another snapshot or from outside the plan are ignored.
    public mutating func onMessage(_ message: SnapshotMessage, now: Instant) -> [Directive] {
        var directives: [Directive] = []
        guard message.key == self.key, self.plan.participants.contains(message.from) else { return directives }
        let peer = message.from
        switch (self.phase, message.body) {
        case (.preparing, .prepared(let ok, let reason, let holds)):
            guard ok else {
                return self.abort(
                    SnapshotAbortReason("\(peer) cannot prepare: \(reason ?? "no reason given")"),
                    now: now
                )
            }
            self.answered.insert(peer)
            if holds { self.holders.insert(peer) }
            if self.answered == self.plan.participants {
                self.enter(.cutting, timeout: self.cutTimeout, now: now)
                directives += self.request(.cut(holders: self.holders), to: self.cutTargets)
            }
        case (.cutting, .cutDone(let reports)):
            self.cuts[peer] = reports
            self.answered.insert(peer)
            if self.answered == self.plan.participants {
                self.enter(.streaming, timeout: self.settings.streamTimeout, now: now)
                directives += self.checkDurable()
            } else if self.plan.mode == .loop {
                // One peer's VMs after another's: the next peer's marker only now.
                directives += self.request(.cut(holders: self.holders), to: self.cutTargets)
            }
        case (.cutting, .durable(let report)), (.streaming, .durable(let report)):
            // Durable implies cut; the cut report itself still comes with `cutDone` (cut is resent).
            self.durable.insert(peer)
            self.reports[peer] = report
            if self.phase == .streaming { directives += self.checkDurable() }
        case (.preparing, .failed(let reason)), (.cutting, .failed(let reason)), (.streaming, .failed(let reason)):
            return self.abort(SnapshotAbortReason("\(peer) failed: \(reason)"), now: now)
        case (.recovering, .holding(let holding)):
            self.holdings[peer] = holding
            directives += self.decideRecovery(now: now)
        case (.committing, .committed), (.aborting, .aborted):
            self.answered.insert(peer)
            if self.answered == self.plan.participants { directives += self.finish() }
        case (.committing, .durable), (.committed, .durable):
            // It missed the commit: tell it again at once.
            directives.append(.send(self.message(.commit(self.manifest)), to: peer))
        case (.aborting, _), (.aborted, _):
            if case .aborted = message.body { break }
            directives.append(.send(self.message(.abort(self.abortReason!)), to: peer))  // !-safe, set on abort
        default:
            break  // duplicates and answers to earlier phases
        }
        directives.append(.scheduleTick(at: self.nextDeadline))
        return directives
    }

    /// Resends unanswered requests, and aborts a phase that ran out of time.
    public mutating func onTick(now: Instant) -> [Directive] {
        var directives: [Directive] = []
        if now >= self.deadline {
            switch self.phase {
            case .preparing, .cutting, .streaming:
                let waiting =
                    self.phase == .streaming
                    ? self.plan.participants.subtracting(self.durable)
                    : self.plan.participants.subtracting(self.answered)
                let names = waiting.sorted().map(\.description).joined(separator: ", ")
                return self.abort(SnapshotAbortReason("no answer in phase \(self.phase) from \(names)"), now: now)
            case .committing, .aborting:
                // They will learn the outcome when they ask again; the outcome itself is decided.
                directives += self.finish()
            case .recovering:
                let waiting = self.plan.participants.intersection(self.alive).filter {
                    self.holdings[$0] == nil || self.holdings[$0] == .streaming
                }
                let names = waiting.sorted().map { self.names[$0] ?? $0.description }.joined(separator: ", ")
                return self.abortEverywhere(
                    SnapshotAbortReason("taking over from a lost initiator: no durable answer from \(names)"),
                    now: now
                )
            case .writingManifest, .committed, .aborted:
                break
            }
        }
        if now >= self.nextRetransmit {
            self.nextRetransmit = now.advanced(by: self.settings.retransmitInterval)
            let missing = self.plan.participants.subtracting(self.answered)
            switch self.phase {
            case .preparing: directives += self.request(.prepare(self.plan), to: missing)
            case .cutting: directives += self.request(.cut(holders: self.holders), to: self.cutTargets)
            case .committing: directives += self.tell(.commit(self.manifest), to: missing)
            case .aborting: directives += self.tell(.abort(self.abortReason!), to: missing)  // !-safe, set on abort
            case .recovering:
                // The silent, and those still streaming (they answer again once durable).
                let asked = self.plan.participants.intersection(self.alive).filter {
                    self.holdings[$0] == nil || self.holdings[$0] == .streaming
                }
                directives += self.request(.inquire(term: self.takeoverTerm ?? self.key.term), to: Set(asked))
            case .streaming:
                // The marker again to those not durable yet, once a second: they answer it idempotently, and one
                // that restarted since (its part lost) answers that it failed, rather than leaving this to the
                // stream's deadline.
                self.nextRetransmit = now.advanced(by: .seconds(1))
                directives += self.request(
                    .cut(holders: self.holders),
                    to: self.plan.participants.subtracting(self.durable)
                )
            case .writingManifest, .committed, .aborted: break
            }
        }
        directives.append(.scheduleTick(at: self.nextDeadline))
        return directives
    }

    /// The manifest is durable: the snapshot is committed; tell everyone (the commit carries the manifest).
    public mutating func manifestWritten(_ manifest: [UInt8], now: Instant) -> [Directive] {
        precondition(self.phase == .writingManifest, "manifestWritten in phase \(self.phase)")
        self.manifest = manifest
        self.enter(.committing, timeout: self.settings.settleTimeout, now: now)
        var directives = self.tell(.commit(manifest), to: self.plan.participants)
        directives.append(.scheduleTick(at: self.nextDeadline))
        return directives
    }

    /// The manifest could not be written: abort.
    public mutating func manifestFailed(_ reason: String, now: Instant) -> [Directive] {
        precondition(self.phase == .writingManifest, "manifestFailed in phase \(self.phase)")
        return self.abortEverywhere(SnapshotAbortReason("cannot write the manifest: \(reason)"), now: now)
    }

    /// Aborts everywhere, unless the manifest is being written (its result decides) or the commit point has
    /// passed (then nothing happens).
    public mutating func abort(_ reason: SnapshotAbortReason, now: Instant) -> [Directive] {
        var directives: [Directive] = []
        switch self.phase {
        case .writingManifest:
            break  // `manifestWritten` commits, `manifestFailed` aborts
        case .preparing, .cutting, .streaming, .recovering:
            return self.abortEverywhere(reason, now: now)
        case .committing, .aborting, .committed, .aborted:
            break
        }
        directives.append(.scheduleTick(at: self.nextDeadline))
        return directives
    }

    /// A participant died or left: before the commit point the snapshot cannot complete; while taking over, only
    /// a participant holding VMs matters (`SnapshotRecovery` decides again without it).
    public mutating func participantDown(_ peer: PeerID, reason: SnapshotAbortReason, now: Instant) -> [Directive] {
        guard self.plan.participants.contains(peer), peer != self.me else { return [] }
        guard self.phase == .recovering else { return self.abort(reason, now: now) }
        self.alive.remove(peer)
        return self.decideRecovery(now: now) + [.scheduleTick(at: self.nextDeadline)]
    }

    /// Taking over: acts on what the participants said, once `SnapshotRecovery` can decide.
    private mutating func decideRecovery(now: Instant) -> [Directive] {
        guard self.phase == .recovering else { return [] }
        // Without the marker's list, every participant may hold images: any lost one aborts.
        let holders = self.knownHolders ?? self.plan.participants
        switch SnapshotRecovery.decide(
            plan: self.plan,
            holders: holders,
            answers: self.holdings,
            alive: self.alive,
            names: self.names
        ) {
        case .wait:
            // Everyone answered and some still stream: their images get the stream's budget.
            let silent = self.plan.participants.intersection(self.alive).subtracting(self.holdings.keys)
            if silent.isEmpty, !self.waitingForStreams {
                self.waitingForStreams = true
                self.deadline = max(self.deadline, now.advanced(by: self.settings.streamTimeout))
            }
            return []
        case .commit(let manifest):
            self.manifest = manifest
            self.enter(.committing, timeout: self.settings.settleTimeout, now: now)
            return self.tell(.commit(manifest), to: self.plan.participants)
        case .build(let cuts, let reports):
            self.cuts = cuts
            self.reports = reports
            self.phase = .writingManifest
            return [.writeManifest(cuts: cuts, reports: reports)]
        case .abort(let reason):
            return self.abortEverywhere(SnapshotAbortReason("taken over from a lost initiator: \(reason)"), now: now)
        }
    }

    private mutating func abortEverywhere(_ reason: SnapshotAbortReason, now: Instant) -> [Directive] {
        self.abortReason = reason
        self.enter(.aborting, timeout: self.settings.settleTimeout, now: now)
        var directives = self.tell(.abort(reason), to: self.plan.participants)
        directives.append(.scheduleTick(at: self.nextDeadline))
        return directives
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Helpers

    private mutating func enter(_ phase: Phase, timeout: Duration, now: Instant) {
        self.phase = phase
        self.answered = []
        self.deadline = now.advanced(by: timeout)
        self.nextRetransmit = now.advanced(by: self.settings.retransmitInterval)
    }

    private mutating func checkDurable() -> [Directive] {
        guard self.phase == .streaming, self.durable == self.plan.participants else { return [] }
        self.phase = .writingManifest
        return [.writeManifest(cuts: self.cuts, reports: self.reports)]
    }

    private mutating func finish() -> [Directive] {
        switch self.phase {
        case .committing:
            self.phase = .committed
            return [.finished(.committed)]
        case .aborting:
            self.phase = .aborted
            return [.finished(.aborted(self.abortReason!))]  // !-safe, set on abort
        default:
            return []
        }
    }

    private func message(_ body: SnapshotMessage.Body) -> SnapshotMessage {
        SnapshotMessage(key: self.key, from: self.me, body: body)
    }

    /// The outcome to `peers`. Taking over, each is asked to inquire first: a participant whose inquiry was lost
    /// still takes the outcome only from the initiator it knows, so it must switch to this one before.
    private func tell(_ outcome: SnapshotMessage.Body, to peers: Set<PeerID>) -> [Directive] {
        guard let term = self.takeoverTerm else { return self.request(outcome, to: peers) }
        return peers.sorted().flatMap {
            [.send(self.message(.inquire(term: term)), to: $0), .send(self.message(outcome), to: $0)]
        }
    }

    private func request(_ body: SnapshotMessage.Body, to peers: Set<PeerID>) -> [Directive] {
        peers.sorted().map { .send(self.message(body), to: $0) }
    }

    /// Who is sent the marker now: everyone, or in mode `loop` the first participant not cut yet.
    var cutTargets: Set<PeerID> {
        let missing = self.plan.participants.subtracting(self.answered)
        guard self.plan.mode == .loop else { return missing }
        return missing.min().map { [$0] } ?? []
    }

    /// Mode `loop` cuts one peer after another, each waiting for its images: the whole stream budget.
    var cutTimeout: Duration {
        self.plan.mode == .loop ? self.settings.streamTimeout : self.settings.cutTimeout
    }

    /// The next time something is due; past the end, a far tick that does nothing.
    public var nextDeadline: Instant {
        switch self.phase {
        case .committed, .aborted, .writingManifest: return self.deadline.advanced(by: .seconds(3600))
        default: return min(self.deadline, self.nextRetransmit)
        }
    }
}
