/// The path one peer uses to another across domains (issue 15, DESIGN §10): relayed first, a hole punch tried a
/// bounded number of times when both NATs allow it, the punched (direct) path used only after authenticated
/// round trips in both directions, and given up for the relay after a few consecutive losses, with a hold-down
/// that doubles at every flap so a one-way path cannot make it flap. Pure: time is a parameter.
public struct PathState<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// Where frames to the peer go.
    public enum Path: Sendable, Hashable {
        /// Through a relay.
        case relayed
        /// Through a relay, while a hole punch is tried.
        case punching(attempt: Int)
        /// Straight to the peer's public address.
        case direct
    }

    /// What the shell must do.
    public enum Action: Sendable, Hashable {
        /// Signal a punch through the relay and send to the peer's public address at the agreed moment.
        case punch(attempt: Int)
        /// Use the direct path from now on.
        case useDirect
        /// Go back to the relay.
        case useRelay
    }

    /// Timing and thresholds.
    public struct Settings: Sendable, Hashable {
        /// Punch attempts before giving up (until the hold-down passes).
        public var attempts = 3
        /// Between two attempts.
        public var retry = Duration.seconds(2)
        /// Round trips proven each way before the direct path is used.
        public var proofs = 2
        /// Consecutive losses on the direct path before going back to the relay.
        public var losses = 3
        /// The first hold-down after giving up or falling back; doubled at every flap, up to `maximumHoldDown`.
        public var holdDown = Duration.seconds(30)
        public var maximumHoldDown = Duration.seconds(600)

        /// The defaults.
        public init() {}
    }

    /// The path now.
    public private(set) var path: Path = .relayed
    let settings: Settings
    /// Whether a hole punch is tried at all.
    public let punchable: Bool
    var nextAttempt: Instant
    var outbound = 0
    var inbound = 0
    var lost = 0
    var holdDown: Duration
    /// How many times the direct path was given up (for `status`).
    public private(set) var flaps = 0

    /// A path to a peer, relayed; `punchable` from both sides' NAT types (`NATType.punchable`).
    public init(punchable: Bool, settings: Settings = Settings(), now: Instant) {
        self.punchable = punchable
        self.settings = settings
        self.nextAttempt = now
        self.holdDown = settings.holdDown
    }

    /// Time passes: starts or repeats a punch when it is due.
    public mutating func tick(now: Instant) -> Action? {
        guard self.punchable, now >= self.nextAttempt else { return nil }
        switch self.path {
        case .direct:
            return nil
        case .relayed:
            self.path = .punching(attempt: 1)
        case .punching(let attempt):
            guard attempt < self.settings.attempts else {
                self.giveUp(now: now)
                return nil
            }
            self.path = .punching(attempt: attempt + 1)
        }
        self.outbound = 0
        self.inbound = 0
        self.nextAttempt = now.advanced(by: self.settings.retry)
        guard case .punching(let attempt) = self.path else { return nil }
        return .punch(attempt: attempt)
    }

    /// An authenticated round trip on the direct path: `outbound` (our probe answered) or inbound (theirs
    /// reached us and was answered).
    public mutating func roundTrip(outbound: Bool, now: Instant) -> Action? {
        switch self.path {
        case .direct:
            // Only our own probe answered proves the way out; theirs arriving says nothing about it.
            if outbound { self.lost = 0 }
            return nil
        case .relayed:
            return nil
        case .punching:
            if outbound { self.outbound += 1 } else { self.inbound += 1 }
            guard self.outbound >= self.settings.proofs, self.inbound >= self.settings.proofs else { return nil }
            self.path = .direct
            self.lost = 0
            return .useDirect
        }
    }

    /// A probe on the direct path went unanswered.
    public mutating func lost(now: Instant) -> Action? {
        guard self.path == .direct else { return nil }
        self.lost += 1
        guard self.lost >= self.settings.losses else { return nil }
        self.flaps += 1
        self.giveUp(now: now)
        return .useRelay
    }

    private mutating func giveUp(now: Instant) {
        self.path = .relayed
        self.nextAttempt = now.advanced(by: self.holdDown)
        self.holdDown = min(self.holdDown * 2, self.settings.maximumHoldDown)
    }
}
