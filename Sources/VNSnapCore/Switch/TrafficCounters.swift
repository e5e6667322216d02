/// Frame and byte counters of one port or tunnel, with drops by reason.
public struct TrafficCounters: Sendable, Hashable, Codable {
    /// Frames received from the VM or peer.
    public var rxFrames: UInt64 = 0
    /// Bytes received (Ethernet frame bytes, without tunnel overhead).
    public var rxBytes: UInt64 = 0
    /// Frames sent to the VM or peer.
    public var txFrames: UInt64 = 0
    /// Bytes sent.
    public var txBytes: UInt64 = 0
    /// Frames dropped, by reason.
    public var drops: [TunnelDropReason: UInt64] = [:]

    /// All zero.
    public init() {}

    /// Counts one received frame of `bytes` bytes.
    @inlinable
    public mutating func received(_ bytes: Int) {
        self.rxFrames &+= 1
        self.rxBytes &+= UInt64(bytes)
    }

    /// Counts one sent frame of `bytes` bytes.
    @inlinable
    public mutating func sent(_ bytes: Int) {
        self.txFrames &+= 1
        self.txBytes &+= UInt64(bytes)
    }

    /// Counts one drop.
    @inlinable
    public mutating func dropped(_ reason: TunnelDropReason) {
        self.drops[reason, default: 0] &+= 1
    }

    /// Sum of all drops.
    public var totalDrops: UInt64 { self.drops.values.reduce(0, &+) }
}
