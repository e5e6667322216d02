/// The restorer's side of a restore (DESIGN §7): every peer holding VMs of the snapshot verifies its images,
/// then loads its VMs paused, then resumes them — each step done everywhere before the next begins, so a bad
/// chunk anywhere stops the restore before any VM is touched, and the VMs resume together.
///
/// Pure: requests are resent every `retransmitInterval` to the holders that have not answered; a negative
/// answer or a step's deadline ends the restore with the reason.
public struct RestoreCoordinator<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// What the shell must do.
    public enum Directive: Sendable, Hashable {
        /// Send `message` to `peer`.
        case send(SnapshotMessage, to: PeerID)
        /// Every holder finished `step`; their answers' blobs, by peer.
        case stepDone(RestoreStep, [PeerID: [UInt8]])
        /// The restore failed in `step`, for this reason (steps after it were not begun).
        case failed(RestoreStep, String)
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
    /// The step under way; `nil` once finished or failed.
    public private(set) var step: RestoreStep?
    /// Whether every step is done.
    public private(set) var succeeded = false
    var answers: [PeerID: [UInt8]] = [:]
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
        retransmitInterval: Duration = .milliseconds(300),
        timeouts: [RestoreStep: Duration] = [.verify: .seconds(300), .load: .seconds(300), .resume: .seconds(30)],
        now: Instant
    ) {
        precondition(!holders.isEmpty, "a restore needs holders")
        self.key = key
        self.run = run
        self.me = me
        self.holders = holders
        self.replay = replay
        self.moved = moved
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
        guard message.key.id == self.key.id, self.holders.contains(message.from), let current = self.step,
            case .restoreAnswer(let run, let step, let ok, let reason, let blob) = message.body,
            run == self.run, step == current
        else { return [] }
        guard ok else {
            self.step = nil
            return [.failed(current, reason.isEmpty ? "\(message.from) refused \(current)" : reason)]
        }
        self.answers[message.from] = blob
        guard self.answers.count == self.holders.count else { return [] }
        let done: [Directive] = [.stepDone(current, self.answers)]
        self.answers = [:]
        guard let next = RestoreStep(rawValue: current.rawValue + 1) else {
            self.step = nil
            self.succeeded = true
            return done
        }
        self.step = next
        self.deadline = now.advanced(by: self.timeouts[next] ?? .seconds(300))
        self.nextRetransmit = now.advanced(by: self.retransmitInterval)
        return done + self.request(to: self.holders)
    }

    /// Resends to the holders that have not answered; fails a step past its deadline.
    public mutating func onTick(now: Instant) -> [Directive] {
        guard let current = self.step else { return [] }
        let missing = self.holders.subtracting(self.answers.keys)
        if now >= self.deadline {
            self.step = nil
            let names = missing.sorted().map(\.description).joined(separator: ", ")
            return [.failed(current, "no answer in step \(current) from \(names)")]
        }
        guard now >= self.nextRetransmit else { return [] }
        self.nextRetransmit = now.advanced(by: self.retransmitInterval)
        return self.request(to: missing)
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
