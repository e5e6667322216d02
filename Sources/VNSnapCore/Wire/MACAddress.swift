/// A 48-bit Ethernet address, stored in the low bits of a `UInt64` so table look-ups hash one word.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    /// The address, most significant byte first, in the low 48 bits.
    public var rawValue: UInt64

    /// The all-ones broadcast address.
    public static let broadcast = MACAddress(rawValue: 0xffff_ffff_ffff)

    /// Wraps a 48-bit value.
    public init(rawValue: UInt64) {
        self.rawValue = rawValue & 0xffff_ffff_ffff
    }

    /// Reads six bytes starting at `offset`.
    @inlinable
    public init(bytes: UnsafeRawBufferPointer, offset: Int) {
        var value: UInt64 = 0
        for i in 0..<6 {
            value = (value << 8) | UInt64(bytes[offset + i])
        }
        self.rawValue = value
    }

    /// Parses `52:54:00:12:34:56` (colons or dashes); `nil` if malformed.
    public init?(_ text: String) {
        let parts = text.split(whereSeparator: { $0 == ":" || $0 == "-" })
        guard parts.count == 6 else { return nil }
        var value: UInt64 = 0
        for part in parts {
            guard part.count == 2, let byte = UInt8(part, radix: 16) else { return nil }
            value = (value << 8) | UInt64(byte)
        }
        self.rawValue = value
    }

    /// True for broadcast and multicast addresses (the I/G bit of the first byte).
    @inlinable
    public var isMulticast: Bool { (self.rawValue >> 40) & 0x01 == 1 }

    public var description: String {
        (0..<6).map { i in
            let byte = UInt8((self.rawValue >> UInt64(8 * (5 - i))) & 0xff)
            let hex = String(byte, radix: 16)
            return hex.count == 1 ? "0" + hex : hex
        }.joined(separator: ":")
    }
}
