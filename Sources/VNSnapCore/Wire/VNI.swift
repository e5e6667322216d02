/// A VIOLIN's network identifier: 24 bits, as in VXLAN, carried in 32 on the wire.
public struct VNI: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// Largest valid identifier.
    public static let maximum: UInt32 = 0x00ff_ffff

    /// The identifier.
    public var rawValue: UInt32

    /// Wraps an identifier; `nil` past 24 bits.
    public init?(_ rawValue: UInt32) {
        guard rawValue <= Self.maximum else { return nil }
        self.rawValue = rawValue
    }

    public static func < (lhs: VNI, rhs: VNI) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { String(self.rawValue) }
}
