/// What one member's SWIM instance has done since it started, for metrics: only ever counted up.
public struct SWIMCounters: Sendable, Hashable, Codable {
    /// Probes started (a direct ping to one member per protocol period).
    public var probes: UInt64 = 0
    /// Probes that went indirect (no ack in time: others asked to ping).
    public var indirectProbes: UInt64 = 0
    /// Suspicions this member started or heard of.
    public var suspicions: UInt64 = 0
    /// Times this member refuted a claim that it was suspect or dead.
    public var refutations: UInt64 = 0
    /// Members this member declared dead (a suspicion that timed out).
    public var declaredDead: UInt64 = 0

    /// All zero.
    public init() {}
}
