/// A peer's stable 64-bit identity, derived from its configured name.
///
/// FNV-1a is enough here: the ID only has to be stable across restarts and distinct within one cluster,
/// and the config loader refuses two peers whose names collide.
public struct PeerID: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The raw identifier as carried on the wire.
    public var rawValue: UInt64

    /// Wraps a raw identifier read from the wire.
    public init(rawValue: UInt64) {
        self.rawValue = rawValue
    }

    /// Derives the identifier of the peer called `name`.
    public init(name: String) {
        self.rawValue = StableHash.fnv1a(name)
    }

    public static func < (lhs: PeerID, rhs: PeerID) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String {
        let hex = String(self.rawValue, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

extension PeerID: Codable {
    /// Encoded as 16 hex digits: JSON numbers lose precision past 2^53.
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = UInt64(text, radix: 16) else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: "bad peer id \(text)")
            )
        }
        self.init(rawValue: value)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(self.description)
    }
}
