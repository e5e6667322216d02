#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The SWIM membership protocol with the Lifeguard refinements, as a pure state machine.
///
/// Model: swift-cluster-membership's `SWIM.Instance` and HashiCorp memberlist. Events come in
/// (`join`, `onTick`, `onMessage`, `leave`) with the current time; directives come out (messages to send,
/// membership changes, when to tick next). No I/O, no clock, no global randomness: time is a parameter and
/// the random generator is injected, so every scenario replays exactly in tests and simulations.
///
/// - SWIM: A. Das, I. Gupta, A. Motivala, "SWIM: Scalable Weakly-consistent Infection-style Process Group
///   Membership Protocol", DSN 2002.
/// - Lifeguard: A. Dadgar, J. Phillips, J. Currey, "Lifeguard: Local Health Awareness for More Accurate
///   Failure Detection", 2018.
public struct SWIMInstance<Instant: InstantProtocol, RNG: RandomNumberGenerator & Sendable>: Sendable
where Instant.Duration == Duration {
    /// A probe of one member in flight.
    struct Probe: Sendable {
        enum Phase: Sendable { case direct, indirect }
        var target: PeerID
        var sequence: UInt32
        var phase: Phase
        var deadline: Instant
        /// End of the protocol period: the indirect phase waits until then.
        var periodEnd: Instant
        var nacksExpected = 0
        var nacksReceived = 0
    }

    /// An indirect probe this peer runs for another.
    struct Relay: Sendable {
        var origin: String
        var originSequence: UInt32
        var deadline: Instant
    }

    /// A member under suspicion (Lifeguard §IV.B).
    struct Suspicion: Sendable {
        var startedAt: Instant
        var confirmations: Set<PeerID>
        var start: Duration
        var floor: Duration
    }

    struct Broadcast: Sendable {
        var update: SWIMUpdate
        var transmits: Int
    }

    /// Settings in force.
    public let settings: SWIMSettings
    /// This peer's own state (its incarnation rises when it refutes).
    public internal(set) var me: MemberState
    var members: [PeerID: Member<Instant>] = [:]
    /// Alive or suspect members other than this peer; maintained by `setMember`.
    var activeOthers = 0
    var rng: RNG
    var localHealth = 0
    var sequence: UInt32 = 0
    var probe: Probe?
    var probeOrder: [PeerID] = []
    var probeIndex = 0
    var nextProbeAt: Instant
    var relays: [UInt32: Relay] = [:]
    var suspicions: [PeerID: Suspicion] = [:]
    var broadcasts: [PeerID: Broadcast] = [:]
    var seeds: [String] = []
    var seedRetryAt: Instant?
    var seedBackoff: Duration
    var nextPushPullAt: Instant
    var nextTombstoneSweep: Instant
    var nextGossipAt: Instant
    var nextReconnectAt: Instant
    var nextSeedCheckAt: Instant
    /// What this instance has done, for metrics.
    public internal(set) var counters = SWIMCounters()
    /// Set by `leave`: this peer no longer refutes, probes or joins.
    public internal(set) var hasLeft = false
    /// How this peer is reachable from other domains, from the addresses its probes' acks say they came from
    /// (issue 15); its type is gossiped in its metadata.
    public internal(set) var nat: NATClassifier
    /// Addresses this peer has sent to (a datagram from any other is unsolicited: its NAT let it in).
    var sentTo: Set<String> = []
    /// When each prober was last dialed back.
    var dialedBack: [String: Instant] = [:]

    /// The shell sent to `address` on its own (another path to a member): a datagram from there is not unsolicited.
    public mutating func noteSent(to address: String) {
        self.sentTo.insert(address)
    }

    /// A new instance for the peer described by `me` (its status is forced to alive).
    public init(me: MemberState, settings: SWIMSettings = SWIMSettings(), rng: RNG, now: Instant) {
        var me = me
        me.status = .alive
        self.me = me
        self.settings = settings
        self.nat = NATClassifier(local: HostPort(me.address) ?? HostPort(host: "", port: 0))
        self.rng = rng
        self.nextProbeAt = now
        self.seedBackoff = settings.seedRetryInitial
        // Spread push/pull over its interval, so members started together do not exchange together.
        var rng = rng
        let spread = Double.random(in: 0.5..<1.5, using: &rng)
        self.rng = rng
        self.nextPushPullAt = now.advanced(by: settings.pushPullInterval * spread)
        self.nextTombstoneSweep = now
        self.nextGossipAt = now
        self.nextReconnectAt = now.advanced(by: settings.reconnectInterval)
        self.nextSeedCheckAt = now.advanced(by: settings.seedRetryMax)
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Views

    /// Every member but this peer, including dead and left ones still remembered.
    public var otherMembers: [Member<Instant>] {
        self.members.values.sorted { $0.state.id < $1.state.id }
    }

    /// The state of `id`, if known (this peer included).
    public func state(of id: PeerID) -> MemberState? {
        id == self.me.id ? self.me : self.members[id]?.state
    }

    /// Members counted for timeouts and retransmits: this peer plus every alive or suspect member.
    /// Kept as a counter: it is read for every message sent.
    public var activeCount: Int { 1 + self.activeOthers }

    /// The local health multiplier's current value (0 = healthy).
    public var localHealthScore: Int { self.localHealth }

    /// Whether this peer knows at least one other member.
    public var hasJoined: Bool { !self.members.isEmpty }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Derived timings

    /// Probe interval scaled by local health (Lifeguard §IV.A).
    var scaledProbeInterval: Duration {
        self.settings.probeInterval * (self.settings.lifeguard ? self.localHealth + 1 : 1)
    }

    /// Probe timeout scaled by local health.
    var scaledProbeTimeout: Duration {
        self.settings.probeTimeout * (self.settings.lifeguard ? self.localHealth + 1 : 1)
    }

    /// log10 of the cluster size, at least 1 (memberlist's scaling).
    var logClusterSize: Double {
        max(1, log10(Double(self.activeCount)))
    }

    /// How many messages each update rides on.
    var retransmitLimit: Int {
        self.settings.retransmitMultiplier * max(1, Int(ceil(log10(Double(self.activeCount + 1)))))
    }

    /// Stores a member's new state, keeping `activeOthers` in step.
    mutating func setMember(_ member: Member<Instant>?, for id: PeerID) {
        let wasActive = self.members[id]?.state.status.isActive ?? false
        let isActive = member?.state.status.isActive ?? false
        self.members[id] = member
        if wasActive != isActive { self.activeOthers += isActive ? 1 : -1 }
    }

    mutating func nextSequence() -> UInt32 {
        self.sequence &+= 1
        return self.sequence
    }

    mutating func adjustLocalHealth(_ delta: Int) {
        guard self.settings.lifeguard else { return }
        self.localHealth = min(self.settings.maxLocalHealth, max(0, self.localHealth + delta))
    }
}
