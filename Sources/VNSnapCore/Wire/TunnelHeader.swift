/// The authenticated, unencrypted header of every tunnel datagram (DESIGN §4).
///
/// Layout, big-endian, 48 bytes, followed by the sealed payload and a 16-byte tag:
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 1 | version (1) |
/// | 1 | 1 | kind (`TunnelHeader.Kind`) |
/// | 2 | 2 | flags (0; reserved) |
/// | 4 | 4 | VNI |
/// | 8 | 8 | source peer |
/// | 16 | 8 | destination peer |
/// | 24 | 8 | sender session (changes on every start of the sender) |
/// | 32 | 4 | sender VM epoch (frames); the sender's election term (membership) |
/// | 36 | 4 | key id (first 4 bytes of the key's fingerprint) |
/// | 40 | 8 | per-tunnel sequence number |
///
/// The whole header is the AEAD's additional data, so none of it can be altered in flight.
public struct TunnelHeader: Hashable, Sendable {
    /// Bytes in an encoded header.
    public static let size = 48
    /// Bytes of the authentication tag after the payload.
    public static let tagSize = 16
    /// The only version this build speaks.
    public static let currentVersion: UInt8 = 1

    /// What the sealed payload is.
    public enum Kind: UInt8, Sendable {
        /// One Ethernet frame.
        case frame = 1
        /// A membership (SWIM) message, on the membership socket.
        case membership = 2
        /// A keyring sync (the cluster's keys after a `vnsnap-peer keys` change), on the membership socket.
        case keyring = 3
        /// A snapshot protocol message (`SnapshotCodec`), on the membership socket.
        case snapshot = 4
        /// The end of an epoch on a tunnel (`EndOfEpochMarker`), on the tunnel socket.
        case endOfEpoch = 5
        /// To a relay: forward the datagram after this envelope to the peer named in it (`RelayEnvelope`).
        case relay = 6
        /// From a relay: the datagram after this envelope came from the peer named in it (`RelayEnvelope`).
        case relayed = 7
        /// A relay session's keepalive, and the relay's answer saying where it sees the sender (`RelayEnvelope`).
        case relayHello = 8
        /// A probe of a direct (punched) path, answered by `pathAck` on the same path.
        case pathProbe = 9
        /// The answer to a `pathProbe`.
        case pathAck = 10
        /// From a relay, on the membership socket: dial my splice port back for this token (`SpliceRelay`).
        case storeDial = 11
    }

    /// Wire version.
    public var version: UInt8
    /// Payload kind.
    public var kind: Kind
    /// The VIOLIN the payload belongs to.
    public var vni: VNI
    /// Sender.
    public var source: PeerID
    /// Intended receiver; a datagram for someone else is dropped.
    public var destination: PeerID
    /// Sender's session: a fresh value on every start, so sequence numbers can restart at zero.
    public var session: UInt64
    /// The sending VM's snapshot epoch (DESIGN §6); 0 until snapshots exist.
    public var epoch: UInt32
    /// Which keyring key sealed the payload.
    public var keyID: UInt32
    /// Per-tunnel sequence number, checked against the replay window.
    public var sequence: UInt64

    /// Creates a header for the current version.
    public init(
        kind: Kind,
        vni: VNI,
        source: PeerID,
        destination: PeerID,
        session: UInt64,
        epoch: UInt32,
        keyID: UInt32,
        sequence: UInt64
    ) {
        self.version = Self.currentVersion
        self.kind = kind
        self.vni = vni
        self.source = source
        self.destination = destination
        self.session = session
        self.epoch = epoch
        self.keyID = keyID
        self.sequence = sequence
    }

    /// Writes the header into the first `size` bytes of `buffer`, which MUST have room for them.
    @inlinable
    public func encode(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= Self.size, "TunnelHeader.encode needs \(Self.size) bytes, got \(buffer.count)")
        buffer[0] = self.version
        buffer[1] = self.kind.rawValue
        buffer.storeBigEndian(UInt16(0), at: 2)
        buffer.storeBigEndian(self.vni.rawValue, at: 4)
        buffer.storeBigEndian(self.source.rawValue, at: 8)
        buffer.storeBigEndian(self.destination.rawValue, at: 16)
        buffer.storeBigEndian(self.session, at: 24)
        buffer.storeBigEndian(self.epoch, at: 32)
        buffer.storeBigEndian(self.keyID, at: 36)
        buffer.storeBigEndian(self.sequence, at: 40)
    }

    /// The header as a fresh array (tests and fixtures; the data path encodes in place).
    public var encoded: [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.size)
        bytes.withUnsafeMutableBytes { self.encode(into: $0) }
        return bytes
    }

    /// Decodes the header at the start of a whole datagram.
    ///
    /// Checks only what can be checked without keys: length, version, kind, VNI range.
    @inlinable
    public static func decode(datagram: UnsafeRawBufferPointer) throws(TunnelDropReason) -> TunnelHeader {
        guard datagram.count >= Self.size + Self.tagSize else { throw .truncated }
        guard datagram[0] == Self.currentVersion else { throw .badVersion }
        guard let kind = Kind(rawValue: datagram[1]) else { throw .unknownKind }
        guard let vni = VNI(datagram.loadBigEndian(UInt32.self, at: 4)) else { throw .malformed }
        return TunnelHeader(
            kind: kind,
            vni: vni,
            source: PeerID(rawValue: datagram.loadBigEndian(UInt64.self, at: 8)),
            destination: PeerID(rawValue: datagram.loadBigEndian(UInt64.self, at: 16)),
            session: datagram.loadBigEndian(UInt64.self, at: 24),
            epoch: datagram.loadBigEndian(UInt32.self, at: 32),
            keyID: datagram.loadBigEndian(UInt32.self, at: 36),
            sequence: datagram.loadBigEndian(UInt64.self, at: 40)
        )
    }
}
