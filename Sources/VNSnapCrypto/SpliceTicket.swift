import CSodium
import VNSnapCore

/// The first frame of a TCP connection to a relay's splice port (DESIGN §10: store streams across domains): a peer
/// asks the relay to join its connection to a store behind a NAT (`open`), and the store, asked by the relay to
/// dial back, names the connection it answers (`answer`). Authenticated with a key derived from the cluster's, so
/// only members use a relay; the stream it joins is sealed end to end by the store protocol on top.
///
/// Wire: magic "VNSP" version:u8 role:u8 keyID:u32 from:u64 to:u64 token:16 mac:16.
public struct SpliceTicket: Sendable, Hashable {
    /// What the ticket asks.
    public enum Role: UInt8, Sendable {
        /// From the peer opening the stream: join me to `to`.
        case open = 1
        /// From the store dialing back: this is `token`'s other end.
        case answer = 2
    }

    /// Bytes of an encoded ticket.
    public static let size = 4 + 1 + 1 + 4 + 8 + 8 + 16 + 16
    static let magic: [UInt8] = Array("VNSP".utf8)
    static let version: UInt8 = 1

    /// Open or answer.
    public var role: Role
    /// Who sends it.
    public var from: PeerID
    /// The other end: the store for `open`, the opener for `answer`.
    public var to: PeerID
    /// Names the connection, chosen at random by the opener.
    public var token: [UInt8]

    /// Creates a ticket; `token` is 16 bytes.
    public init(role: Role, from: PeerID, to: PeerID, token: [UInt8]) {
        precondition(token.count == 16, "a splice token is 16 bytes")
        self.role = role
        self.from = from
        self.to = to
        self.token = token
    }

    /// A random token.
    public static func newToken() -> [UInt8] {
        _ = Sodium.ready
        var token = [UInt8](repeating: 0, count: 16)
        randombytes_buf(&token, token.count)
        return token
    }

    /// The ticket's bytes, authenticated with `crypto`'s primary key.
    public func encode(crypto: TunnelCrypto) -> [UInt8] {
        let key = crypto.subkeys[0]
        var bytes = Self.magic + [Self.version, self.role.rawValue]
        bytes += withUnsafeBytes(of: key.keyID.bigEndian, Array.init)
        bytes += withUnsafeBytes(of: self.from.rawValue.bigEndian, Array.init)
        bytes += withUnsafeBytes(of: self.to.rawValue.bigEndian, Array.init)
        bytes += self.token
        return bytes + Self.mac(bytes, key: key.bytes)
    }

    /// Reads and checks a ticket; throws what is wrong with it.
    public static func decode(_ bytes: [UInt8], crypto: TunnelCrypto) throws(TunnelDropReason) -> SpliceTicket {
        guard bytes.count == Self.size else { throw .truncated }
        guard Array(bytes[0..<4]) == Self.magic else { throw .malformed }
        guard bytes[4] == Self.version else { throw .badVersion }
        guard let role = Role(rawValue: bytes[5]) else { throw .unknownKind }
        let keyID = bytes[6..<10].reduce(UInt32(0)) { ($0 << 8) | UInt32($1) }
        guard let key = crypto.subkeys.first(where: { $0.keyID == keyID }) else { throw .unknownKey }
        let body = Array(bytes[0..<(Self.size - 16)])
        let tag = Self.mac(body, key: key.bytes)
        guard sodium_memcmp(tag, Array(bytes[(Self.size - 16)...]), 16) == 0 else { throw .badTag }
        func u64(_ at: Int) -> UInt64 { bytes[at..<(at + 8)].reduce(UInt64(0)) { ($0 << 8) | UInt64($1) } }
        return SpliceTicket(
            role: role,
            from: PeerID(rawValue: u64(10)),
            to: PeerID(rawValue: u64(18)),
            token: Array(bytes[26..<42])
        )
    }

    static func mac(_ bytes: [UInt8], key: [UInt8]) -> [UInt8] {
        let context = Array("vnsnap/splice/v1".utf8) + bytes
        var tag = [UInt8](repeating: 0, count: 16)
        _ = crypto_generichash(&tag, 16, context, UInt64(context.count), key, key.count)
        return tag
    }
}

/// The relay's first frame back to the opener of a splice: joined (the store's own frames follow), or refused and
/// why (the connection then closes). Plain text, "VNSP ok" or "VNSP refused: reason".
public enum SpliceAnswer: Sendable, Hashable {
    /// The store dialed back: what follows is the store's.
    case joined
    /// No splice: why.
    case refused(String)

    static let prefix = "VNSP "

    /// The frame's bytes.
    public var bytes: [UInt8] {
        switch self {
        case .joined: Array((Self.prefix + "ok").utf8)
        case .refused(let reason): Array((Self.prefix + "refused: " + reason).utf8)
        }
    }

    /// Reads a relay's answer; `nil` for anything else.
    public init?(_ bytes: [UInt8]) {
        guard bytes.count < 512, let text = String(validating: bytes, as: UTF8.self), text.hasPrefix(Self.prefix)
        else { return nil }
        let rest = text.dropFirst(Self.prefix.count)
        if rest == "ok" {
            self = .joined
        } else if rest.hasPrefix("refused: ") {
            self = .refused(String(rest.dropFirst("refused: ".count)))
        } else {
            return nil
        }
    }
}
