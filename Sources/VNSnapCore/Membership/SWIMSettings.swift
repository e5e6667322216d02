/// Tuning of the SWIM protocol and its Lifeguard refinements (defaults follow HashiCorp memberlist's LAN
/// profile where it has one).
public struct SWIMSettings: Sendable, Hashable {
    /// Time between probes (SWIM's protocol period T'), before the local health multiplier.
    public var probeInterval: Duration = .seconds(1) {
        willSet { precondition(newValue > .zero, "probeInterval must be positive") }
    }
    /// How long a direct probe waits for its ack before asking others, before the local health multiplier.
    public var probeTimeout: Duration = .milliseconds(500) {
        willSet { precondition(newValue > .zero, "probeTimeout must be positive") }
    }
    /// Members asked to probe indirectly (SWIM's k). memberlist uses 3; 5 makes a false suspicion under 10 %
    /// loss about 7 times rarer (each indirect path is four lossy hops), which keeps the gossip queue from
    /// saturating in large clusters (BENCHMARKS.md), at the cost of two more datagrams per failed direct probe.
    public var indirectProbes = 5 {
        willSet { precondition(newValue >= 0, "indirectProbes must not be negative") }
    }
    /// α: a suspicion starts at α·log10(n) probe intervals (Lifeguard IV.B; memberlist's SuspicionMult).
    public var suspicionMultiplier: Double = 4 {
        willSet { precondition(newValue > 0, "suspicionMultiplier must be positive") }
    }
    /// β: the floor a suspicion shrinks to is its start divided by β, as confirmations arrive.
    public var suspicionFloorDivisor: Double = 6 {
        willSet { precondition(newValue >= 1, "suspicionFloorDivisor must be at least 1") }
    }
    /// Independent confirmations after which a suspicion has shrunk to its floor.
    public var suspicionConfirmations = 2 {
        willSet { precondition(newValue >= 1, "suspicionConfirmations must be at least 1") }
    }
    /// λ: each update is piggybacked on λ·log10(n+1) (at least λ) messages (memberlist's RetransmitMult).
    public var retransmitMultiplier = 6 {
        willSet { precondition(newValue >= 1, "retransmitMultiplier must be at least 1") }
    }
    /// Most updates piggybacked on one message; the datagram size bounds it too. Like memberlist, fill the
    /// datagram: with only 8, a 1,000-member cluster at 10 % loss produced news faster than it could spread,
    /// old refutations starved behind newer suspicions, and healthy members were declared dead.
    public var maxPiggyback = 32 {
        willSet { precondition(newValue >= 0, "maxPiggyback must not be negative") }
    }
    /// While there is news, every this often send it to `gossipFanout` random members (memberlist's
    /// GossipInterval); zero turns the gossip loop off (news then rides on probes only, as in plain SWIM).
    public var gossipInterval: Duration = .milliseconds(200)
    /// Members each gossip round goes to (memberlist's GossipNodes).
    public var gossipFanout = 3 {
        willSet { precondition(newValue >= 0, "gossipFanout must not be negative") }
    }
    /// Local health multiplier ceiling S (Lifeguard IV.A): probe interval and timeout scale by (LHM + 1).
    public var maxLocalHealth = 8 {
        willSet { precondition(newValue >= 0, "maxLocalHealth must not be negative") }
    }
    /// Full-state exchange with one random member, scaled up with cluster size as memberlist does.
    public var pushPullInterval: Duration = .seconds(30)
    /// Most member states in one push/pull datagram (the codec refuses larger datagrams).
    public var pushPullBatch = 12 {
        willSet { precondition(newValue >= 1, "pushPullBatch must be at least 1") }
    }
    /// Every this often, a full-state exchange with one random dead member (serf's reconnect), so the two
    /// sides of a healed partition find each other again; zero turns it off.
    public var reconnectInterval: Duration = .seconds(10)
    /// First retry of unanswered seeds; doubles up to `seedRetryMax`.
    public var seedRetryInitial: Duration = .seconds(1)
    /// Longest wait between seed retries.
    public var seedRetryMax: Duration = .seconds(30)
    /// How long dead and left members are remembered (so old gossip cannot resurrect them). Dead members count
    /// in the election's known set until forgotten, so this is also how long a minority stays without an
    /// initiator: 72 h, serf's reconnect_timeout.
    public var deadRetention: Duration = .seconds(72 * 3600)
    /// Lifeguard on (local health, nacks, buddy system, confirmations shorten suspicion) or plain SWIM.
    public var lifeguard = true

    /// The defaults.
    public init() {}
}
