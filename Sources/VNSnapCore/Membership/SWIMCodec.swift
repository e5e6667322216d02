/// The binary wire format of membership messages (before sealing), big-endian.
///
/// ```
/// message  = version:u8(2) type:u8 from:u64 body gossipCount:u8 update*
/// type     = 1 ping, 2 pingRequest, 3 ack, 4 nack, 5 pushPull, 6 gossip
/// body     = ping: seq:u32 target:u64 | pingRequest: seq:u32 target:u64 address:str
///          | ack: seq:u32 observed:str | nack: seq:u32 | pushPull: isResponse:u8 count:u8 state* | gossip: (nothing)
/// update   = state origin:u64
/// state    = id:u64 name:str address:str incarnation:u64 status:u8 roles:u8 tunnel:str capacity:u64 version:str
///            keyringGeneration:u64 keyringDigest:u32 nat:u8 (0 unknown, 1 public, 2 endpoint-independent,
///            3 symmetric, 4 inbound blocked) public:str relayCount:u8 relay:u64*
/// str      = length:u8 utf8
/// ```
/// A message larger than `maximumSize` is refused when encoding, never truncated; the instance packs
/// gossip and push/pull batches to fit.
public enum SWIMCodec {
    /// Largest encoded message: sealed, it stays under a 1500-byte MTU with room for IP/UDP headers.
    public static let maximumSize = 1360
    /// NAT types on the wire.
    static let natCodes: [(NATType, UInt8)] = [
        (.unknown, 0), (.public, 1), (.endpointIndependent, 2), (.symmetric, 3), (.inboundBlocked, 4),
    ]
    static let version: UInt8 = 3
    /// Most relays a member may name (it keeps k of them, 3 by default).
    public static let maximumRelays = 8
    /// Longest exchange key a member may gossip (an X25519 public key is 32 bytes).
    public static let maximumExchangeKey = 32

    /// Why a membership datagram was refused.
    public typealias Failure = WireFailure

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Sizes

    /// Encoded bytes of a member state.
    public static func size(of state: MemberState) -> Int {
        8 + 1 + state.name.utf8.count + 1 + state.address.utf8.count + 8 + 1 + 1
            + 1 + state.metadata.tunnelAddress.utf8.count + 8 + 1 + state.metadata.version.utf8.count + 12 + 1
            + 1 + state.metadata.publicAddress.utf8.count + 1 + 8 * state.metadata.relays.count
            + 1 + state.metadata.exchangeKey.count
    }

    /// Encoded bytes of a gossiped update.
    public static func size(of update: SWIMUpdate) -> Int { self.size(of: update.state) + 8 }

    /// Encoded bytes of a message with no gossip.
    public static func baseSize(of body: SWIMMessage.Body) -> Int {
        let header = 1 + 1 + 8 + 1
        switch body {
        case .ping: return header + 12
        case .pingRequest(_, _, let address): return header + 12 + 1 + address.utf8.count
        case .ack(_, let observed): return header + 4 + 1 + observed.utf8.count
        case .nack: return header + 4
        case .gossip: return header
        case .pushPull(_, let states): return header + 2 + states.reduce(0) { $0 + self.size(of: $1) }
        }
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Encoding

    /// Encodes a message; throws `oversized` past `maximumSize` or for a string over 255 bytes.
    public static func encode(_ message: SWIMMessage) throws(Failure) -> [UInt8] {
        var writer = WireWriter()
        writer.u8(Self.version)
        switch message.body {
        case .ping(let sequence, let target):
            writer.u8(1)
            writer.u64(message.from.rawValue)
            writer.u32(sequence)
            writer.u64(target.rawValue)
        case .pingRequest(let sequence, let target, let address):
            writer.u8(2)
            writer.u64(message.from.rawValue)
            writer.u32(sequence)
            writer.u64(target.rawValue)
            try writer.string(address)
        case .ack(let sequence, let observed):
            writer.u8(3)
            writer.u64(message.from.rawValue)
            writer.u32(sequence)
            try writer.string(observed)
        case .nack(let sequence):
            writer.u8(4)
            writer.u64(message.from.rawValue)
            writer.u32(sequence)
        case .gossip:
            writer.u8(6)
            writer.u64(message.from.rawValue)
        case .pushPull(let isResponse, let states):
            writer.u8(5)
            writer.u64(message.from.rawValue)
            writer.u8(isResponse ? 1 : 0)
            guard states.count <= 255 else { throw .oversized }
            writer.u8(UInt8(states.count))
            for state in states { try writer.state(state) }
        }
        guard message.gossip.count <= 255 else { throw .oversized }
        writer.u8(UInt8(message.gossip.count))
        for update in message.gossip {
            try writer.state(update.state)
            writer.u64(update.origin.rawValue)
        }
        guard writer.bytes.count <= Self.maximumSize else { throw .oversized }
        return writer.bytes
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Decoding

    /// Decodes a message; every malformed input throws, none crashes.
    public static func decode(_ bytes: [UInt8]) throws(Failure) -> SWIMMessage {
        guard bytes.count <= Self.maximumSize else { throw .oversized }
        var reader = WireReader(bytes: bytes)
        guard try reader.u8() == Self.version else { throw .badVersion }
        let type = try reader.u8()
        let from = PeerID(rawValue: try reader.u64())
        let body: SWIMMessage.Body
        switch type {
        case 1: body = .ping(sequence: try reader.u32(), target: PeerID(rawValue: try reader.u64()))
        case 2:
            body = .pingRequest(
                sequence: try reader.u32(),
                target: PeerID(rawValue: try reader.u64()),
                address: try reader.string()
            )
        case 3: body = .ack(sequence: try reader.u32(), observed: try reader.string())
        case 4: body = .nack(sequence: try reader.u32())
        case 5:
            let flag = try reader.u8()
            guard flag <= 1 else { throw .malformed }
            let count = Int(try reader.u8())
            var states: [MemberState] = []
            for _ in 0..<count { states.append(try reader.state()) }
            body = .pushPull(isResponse: flag == 1, members: states)
        case 6: body = .gossip
        default: throw .malformed
        }
        let gossipCount = Int(try reader.u8())
        var gossip: [SWIMUpdate] = []
        for _ in 0..<gossipCount {
            let state = try reader.state()
            gossip.append(SWIMUpdate(state: state, origin: PeerID(rawValue: try reader.u64())))
        }
        guard reader.offset == bytes.count else { throw .trailingBytes }
        return SWIMMessage(from: from, body: body, gossip: gossip)
    }

    static let roleBits: [(PeerRole, UInt8)] = [(.vm, 1), (.store, 2), (.relay, 4)]
}

/// A member state on the wire (`state` in the grammar above).
extension WireWriter {
    mutating func state(_ state: MemberState) throws(WireFailure) {
        self.u64(state.id.rawValue)
        try self.string(state.name)
        try self.string(state.address)
        self.u64(state.incarnation)
        self.u8(state.status.rawValue)
        self.u8(SWIMCodec.roleBits.reduce(0) { state.metadata.roles.contains($1.0) ? $0 | $1.1 : $0 })
        try self.string(state.metadata.tunnelAddress)
        self.u64(state.metadata.storeCapacity)
        try self.string(state.metadata.version)
        self.u64(state.metadata.keyringGeneration)
        self.u32(state.metadata.keyringDigest)
        self.u8(SWIMCodec.natCodes.first { $0.0 == state.metadata.nat }?.1 ?? 0)
        try self.string(state.metadata.publicAddress)
        guard state.metadata.relays.count <= SWIMCodec.maximumRelays else { throw .oversized }
        self.u8(UInt8(state.metadata.relays.count))
        for relay in state.metadata.relays { self.u64(relay.rawValue) }
        guard state.metadata.exchangeKey.count <= SWIMCodec.maximumExchangeKey else { throw .oversized }
        self.u8(UInt8(state.metadata.exchangeKey.count))
        for byte in state.metadata.exchangeKey { self.u8(byte) }
    }
}

/// A member state from the wire.
extension WireReader {
    mutating func state() throws(WireFailure) -> MemberState {
        let id = PeerID(rawValue: try self.u64())
        let name = try self.string()
        let address = try self.string()
        let incarnation = try self.u64()
        guard let status = MemberStatus(rawValue: try self.u8()) else { throw .malformed }
        let roleByte = try self.u8()
        guard roleByte & ~0x07 == 0 else { throw .malformed }
        let roles = Set(SWIMCodec.roleBits.filter { roleByte & $0.1 != 0 }.map(\.0))
        let tunnel = try self.string()
        let capacity = try self.u64()
        let version = try self.string()
        let keyringGeneration = try self.u64()
        let keyringDigest = try self.u32()
        let natCode = try self.u8()
        guard let nat = SWIMCodec.natCodes.first(where: { $0.1 == natCode })?.0 else { throw .malformed }
        let publicAddress = try self.string()
        let relayCount = Int(try self.u8())
        guard relayCount <= SWIMCodec.maximumRelays else { throw .malformed }
        var relays: [PeerID] = []
        for _ in 0..<relayCount { relays.append(PeerID(rawValue: try self.u64())) }
        let keyCount = Int(try self.u8())
        guard keyCount <= SWIMCodec.maximumExchangeKey else { throw .malformed }
        var exchangeKey: [UInt8] = []
        for _ in 0..<keyCount { exchangeKey.append(try self.u8()) }
        return MemberState(
            id: id,
            name: name,
            address: address,
            incarnation: incarnation,
            status: status,
            metadata: MemberMetadata(
                roles: roles,
                tunnelAddress: tunnel,
                storeCapacity: capacity,
                version: version,
                keyringGeneration: keyringGeneration,
                keyringDigest: keyringDigest,
                nat: nat,
                publicAddress: publicAddress,
                relays: relays,
                exchangeKey: exchangeKey
            )
        )
    }
}
