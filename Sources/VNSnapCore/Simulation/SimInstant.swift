/// Simulated time: nanoseconds since the simulation began.
public struct SimInstant: InstantProtocol, Sendable, Hashable, CustomStringConvertible {
    /// Nanoseconds since the start.
    public var nanoseconds: Int64

    /// The start of a simulation.
    public static let zero = SimInstant(nanoseconds: 0)

    /// An instant.
    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    public func advanced(by duration: Duration) -> SimInstant {
        SimInstant(nanoseconds: self.nanoseconds + Self.nanoseconds(duration))
    }

    public func duration(to other: SimInstant) -> Duration { .nanoseconds(other.nanoseconds - self.nanoseconds) }

    public static func < (lhs: SimInstant, rhs: SimInstant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    /// Seconds since the start.
    public var seconds: Double { Double(self.nanoseconds) / 1e9 }

    public var description: String { "t=\(self.seconds)s" }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        duration.inNanoseconds
    }
}

/// SplitMix64: a small, fast, seedable generator for replayable simulations.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// A generator for `seed`.
    public init(seed: UInt64) { self.state = seed }

    public mutating func next() -> UInt64 {
        self.state &+= 0x9e37_79b9_7f4a_7c15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
