/// The restorer's side of a restore (DESIGN §7): every peer holding VMs of the snapshot verifies its images,
/// then loads a new QEMU per VM beside the running one, then pauses the running ones, then switches over (channel
/// logs re-injected, the new VMs still paused), then resumes — each step done everywhere before the next begins, so
/// a bad chunk anywhere stops the restore before any VM is touched, no restored VM runs before every channel log
/// is in place, and the VMs resume together.
///
/// A transaction (issue 13): a failure in `load` or `pause` (a refusal, or a step's deadline) asks every holder to
/// roll back (new QEMUs stopped, old VMs resumed) and reports the failure once they all have, or the rollback's
/// deadline passed; a failure in `verify` touched nothing; one in `switchOver` is past the point of return: every
/// holder is still asked to resume (what switched over runs) and the failure is reported after.
///
/// Pure: requests are resent every `retransmitInterval` to the holders that have not answered.
public struct RestoreCoordinator<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// What the shell must do.
    public enum Directive: Sendable, Hashable {
        /// Send `message` to `peer`.
        case send(SnapshotMessage, to: PeerID)
        /// Every holder finished `step`; their answers' blobs, by peer.
        case stepDone(RestoreStep, [PeerID: [UInt8]])
        /// The restore failed in `step`, for this reason (steps after it were not begun; the reason says how the
        /// rollback went, when there was one).
        case failed(RestoreStep, String)
        /// Every running VM is paused and the restore moves VMs: have the initiator record their new owners (issue
        /// 14), then call `ownersRecorded` (or `ownersRefused`); the switch-over waits for it.
        case recordOwners
    }

    /// The snapshot restored.
    public let key: SnapshotKey
    /// This restore's id.
    public let run: UInt64
    /// The restorer.
    public let me: PeerID
    /// The peers holding VMs of the snapshot.
    public let holders: Set<PeerID>
    /// Whether channel logs are re-injected.
    public let replay: Bool
    /// VMs restored away from their lost peers, and where.
    public let moved: [String: PeerID]
    /// Whether the initiator must record new owners before the switch-over (the restore moves VMs).
    public let recordsOwners: Bool
    /// Waiting for the initiator to record the new owners (between pause and resume).
    public private(set) var awaitingOwners = false
    /// The step under way; `nil` once finished or failed.
    public private(set) var step: RestoreStep?
    /// Whether every step is done.
    public private(set) var succeeded = false
    /// While rolling back, or resuming after a failed switch-over: the step that failed, and why.
    public private(set) var failure: (step: RestoreStep, reason: String)?
    var answers: [PeerID: [UInt8]] = [:]
    /// Holders that died or left during the restore: no answer is waited for from them.
    public private(set) var departed: Set<PeerID> = []
    /// Rollback answers that said a VM could not be put back.
    var rollbackProblems: [String] = []
    var deadline: Instant
    var nextRetransmit: Instant
    let retransmitInterval: Duration
    let timeouts: [RestoreStep: Duration]

    /// A restore of `key` by `me` from `holders`; nothing is sent until `start`.
    public init(
        key: SnapshotKey,
        run: UInt64,
        me: PeerID,
        holders: Set<PeerID>,
        replay: Bool = true,
        moved: [String: PeerID] = [:],
        recordsOwners: Bool = false,
        retransmitInterval: Duration = .milliseconds(300),
        timeouts: [RestoreStep: Duration] = [
            .verify: .seconds(300), .load: .seconds(300), .pause: .seconds(30), .switchOver: .seconds(30),
            .resume: .seconds(30), .rollback: .seconds(60),
        ],
        now: Instant
    ) {
        precondition(!holders.isEmpty, "a restore needs holders")
        self.key = key
        self.run = run
        self.me = me
        self.holders = holders
        self.replay = replay
        self.moved = moved
        self.recordsOwners = recordsOwners
        self.retransmitInterval = retransmitInterval
        self.timeouts = timeouts
        self.step = .verify
        self.deadline = now.advanced(by: timeouts[.verify] ?? .seconds(300))
        self.nextRetransmit = now.advanced(by: retransmitInterval)
    }

    /// Asks every holder to verify.
    public func start() -> [Directive] {
        self.request(to: self.holders)
    }

    /// An answer from a holder; answers to other runs or steps, or from others, are ignored.
    public mutating func onMessage(_ message: SnapshotMessage, now: Instant) -> [Directive] {
        guard message.key.id == self.key.id, self.holders.contains(message.from), !self.departed.contains(message.from),
            let current = self.step,
            case .restoreAnswer(let run, let step, let ok, let reason, let blob) = message.body,
            run == self.run, step == current, self.answers[message.from] == nil, !self.awaitingOwners
        else { return [] }
        if current == .rollback {
            if !ok { self.rollbackProblems.append(reason.isEmpty ? "\(message.from) could not roll back" : reason) }
            self.answers[message.from] = blob
            return self.allAnswered ? self.rolledBack(missing: self.departed.sorted()) : []
        }
        let why = reason.isEmpty ? "\(message.from) refused \(current)" : reason
        guard ok || current == .switchOver else { return self.fail(current, why, now: now) }
        // Resumed anyway once every holder has answered: a holder still switching over must not be resumed.
        if !ok { self.switchOverFailed(why) }
        self.answers[message.from] = blob
        return self.advanceIfAllAnswered(now: now)
    }

    /// Holder `peer` died or left: a restore still before its switch-over fails at once (rolled back by the others
    /// from `load` on) instead of waiting out the step's deadline; past it, what switched over runs and the others
    /// resume; a rollback stops waiting for it.
    public mutating func holderDown(_ peer: PeerID, now: Instant) -> [Directive] {
        guard self.holders.contains(peer), !self.departed.contains(peer), let current = self.step else { return [] }
        self.departed.insert(peer)
        self.answers[peer] = nil
        let why = "\(peer) died or left"
        switch current {
        case .rollback:
            return self.allAnswered ? self.rolledBack(missing: self.departed.sorted()) : []
        case .switchOver, .resume:
            self.switchOverFailed(why)
            return self.advanceIfAllAnswered(now: now)
        default:
            guard !self.awaitingOwners else {
                self.awaitingOwners = false
                return self.fail(.pause, why, now: now)
            }
            return self.fail(current, why, now: now)
        }
    }

    /// Every holder still there has answered this step.
    private var allAnswered: Bool {
        self.holders.subtracting(self.departed).isSubset(of: self.answers.keys)
    }

    /// The step is done once every holder still there answered: the next one begins (or the restore ends).
    private mutating func advanceIfAllAnswered(now: Instant) -> [Directive] {
        guard let current = self.step, self.allAnswered else { return [] }
        let done: [Directive] = [.stepDone(current, self.answers)]
        self.answers = [:]
        guard let index = RestoreStep.forward.firstIndex(of: current), index + 1 < RestoreStep.forward.count else {
            self.step = nil
            guard let failure = self.failure else {
                self.succeeded = true
                return done
            }
            return done + [.failed(failure.step, "\(failure.reason); the VMs that switched over were resumed")]
        }
        if current == .pause, self.recordsOwners {
            self.awaitingOwners = true
            self.deadline = now.advanced(by: self.timeouts[.pause] ?? .seconds(30))
            return done + [.recordOwners]
        }
        return done + self.begin(RestoreStep.forward[index + 1], now: now)
    }

    /// The initiator recorded the moved VMs' new owners: switch over.
    public mutating func ownersRecorded(now: Instant) -> [Directive] {
        guard self.awaitingOwners else { return [] }
        self.awaitingOwners = false
        return self.begin(.switchOver, now: now)
    }

    /// The initiator did not record them (no initiator, or it refused): roll back, every VM as it was.
    public mutating func ownersRefused(_ reason: String, now: Instant) -> [Directive] {
        guard self.awaitingOwners else { return [] }
        self.awaitingOwners = false
        return self.fail(.pause, "the new owners of the moved VMs were not recorded: \(reason)", now: now)
    }

    /// Resends to the holders that have not answered; fails a step past its deadline.
    public mutating func onTick(now: Instant) -> [Directive] {
        if self.awaitingOwners {
            guard now >= self.deadline else { return [] }
            return self.ownersRefused("the initiator did not answer", now: now)
        }
        guard let current = self.step else { return [] }
        let missing = self.holders.subtracting(self.answers.keys).subtracting(self.departed)
        if now >= self.deadline {
            let names = missing.sorted().map(\.description).joined(separator: ", ")
            if current == .rollback { return self.rolledBack(missing: missing.union(self.departed).sorted()) }
            let reason = "no answer in step \(current) from \(names)"
            guard current == .switchOver else { return self.fail(current, reason, now: now) }
            // Past the point of return: those that switched over run; a late one resumes when its step ends.
            self.switchOverFailed(reason)
            return self.begin(.resume, now: now)
        }
        guard now >= self.nextRetransmit else { return [] }
        self.nextRetransmit = now.advanced(by: self.retransmitInterval)
        return self.request(to: missing)
    }

    private mutating func begin(_ step: RestoreStep, now: Instant) -> [Directive] {
        self.step = step
        self.answers = [:]
        self.deadline = now.advanced(by: self.timeouts[step] ?? .seconds(300))
        self.nextRetransmit = now.advanced(by: self.retransmitInterval)
        return self.request(to: self.holders.subtracting(self.departed))
    }

    /// Notes why the switch-over failed (after any earlier reason): reported once the resume has run.
    private mutating func switchOverFailed(_ reason: String) {
        self.failure = (.switchOver, (self.failure.map { $0.reason + "; " } ?? "") + reason)
    }

    /// `step` failed: before any VM was touched, or in `resume`, that is the end; in `load` or `pause`, every
    /// holder rolls back first (those that did nothing yet answer at once).
    private mutating func fail(_ step: RestoreStep, _ reason: String, now: Instant) -> [Directive] {
        guard step == .load || step == .pause else {
            self.step = nil
            return [.failed(step, reason)]
        }
        self.failure = (step, reason)
        return self.begin(.rollback, now: now)
    }

    private mutating func rolledBack(missing: [PeerID]) -> [Directive] {
        self.step = nil
        guard let failure = self.failure else { return [] }
        var outcome: String
        if missing.isEmpty, self.rollbackProblems.isEmpty {
            outcome = "rolled back: every VM runs as it did before the restore"
        } else {
            let silent = missing.filter { !self.departed.contains($0) }
            let gone = missing.filter { self.departed.contains($0) }
            outcome = silent.isEmpty && self.rollbackProblems.isEmpty ? "rolled back" : "rollback incomplete"
            if !silent.isEmpty {
                outcome +=
                    " (no answer from \(silent.map(\.description).joined(separator: ", ")); they roll back on their own when the restorer is silent)"
            }
            if !gone.isEmpty {
                outcome +=
                    " (\(gone.map(\.description).joined(separator: ", ")) died or left: nothing of the restore runs there)"
            }
            if !self.rollbackProblems.isEmpty { outcome += ": " + self.rollbackProblems.joined(separator: "; ") }
        }
        return [.failed(failure.step, "\(failure.reason); \(outcome)")]
    }

    private func request(to peers: Set<PeerID>) -> [Directive] {
        guard let step = self.step else { return [] }
        return peers.sorted().map {
            .send(
                SnapshotMessage(
                    key: self.key,
                    from: self.me,
                    body: .restore(run: self.run, step: step, replay: self.replay, moved: self.moved)
                ),
                to: $0
            )
        }
    }
}
