/// A member's state in the SWIM protocol, in precedence order for equal incarnations (SWIM §4.2).
public enum MemberStatus: UInt8, Sendable, Hashable, Codable, CaseIterable, Comparable, CustomStringConvertible {
    /// Answering probes.
    case alive = 0
    /// Missed a probe; dead unless it refutes before its suspicion times out.
    case suspect = 1
    /// Declared dead after its suspicion timed out.
    case dead = 2
    /// Left on purpose (`vnsnap-peer leave`, SIGTERM).
    case left = 3

    public static func < (lhs: MemberStatus, rhs: MemberStatus) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String {
        switch self {
        case .alive: "alive"
        case .suspect: "suspect"
        case .dead: "dead"
        case .left: "left"
        }
    }

    /// Alive or suspect: still counted as a member that may answer.
    public var isActive: Bool { self == .alive || self == .suspect }
}

/// What a member tells the cluster about itself.
public struct MemberMetadata: Sendable, Hashable, Codable {
    /// Its roles.
    public var roles: Set<PeerRole>
    /// Its switch's tunnel address (`host:port`).
    public var tunnelAddress: String
    /// Bytes of image store it offers (0 without the store role).
    public var storeCapacity: UInt64
    /// Its software version.
    public var version: String
    /// Generation of its keyring: raised by every cluster-wide key change (`vnsnap-peer keys`).
    public var keyringGeneration: UInt64
    /// A short digest of its keyring, so two keyrings of one generation can still be told apart and ordered.
    public var keyringDigest: UInt32
    /// How it is reachable from other domains, as it measured itself (issue 15).
    public var nat: NATType
    /// Its membership socket's public mapping as observers agree on it, `""` while unknown or symmetric.
    public var publicAddress: String
    /// The relays it keeps sessions with (issue 15): others reach it through them. Empty for a public peer.
    public var relays: [PeerID]
    /// The public half of its X25519 key pair for this run (`ExchangeKeyPair`): tunnel datagrams between two peers
    /// are sealed with a key only the two can derive. Empty when it has none.
    public var exchangeKey: [UInt8]

    /// Creates metadata.
    public init(
        roles: Set<PeerRole>,
        tunnelAddress: String,
        storeCapacity: UInt64,
        version: String,
        keyringGeneration: UInt64 = 0,
        keyringDigest: UInt32 = 0,
        nat: NATType = .unknown,
        publicAddress: String = "",
        relays: [PeerID] = [],
        exchangeKey: [UInt8] = []
    ) {
        self.roles = roles
        self.tunnelAddress = tunnelAddress
        self.storeCapacity = storeCapacity
        self.version = version
        self.keyringGeneration = keyringGeneration
        self.keyringDigest = keyringDigest
        self.nat = nat
        self.publicAddress = publicAddress
        self.relays = relays
        self.exchangeKey = exchangeKey
    }
}

/// One member's state as gossiped: what a SWIM update carries and what push/pull exchanges.
public struct MemberState: Sendable, Hashable, Codable {
    /// Identity (from the name).
    public var id: PeerID
    /// Name.
    public var name: String
    /// Membership address (`host:port`).
    public var address: String
    /// Incarnation: only the member itself raises it, to refute suspicion or to announce news.
    public var incarnation: UInt64
    /// Status.
    public var status: MemberStatus
    /// Metadata. Kept in a shared, immutable box: every peer holds a state per member and metadata rarely
    /// changes, so copies share one allocation (a 10,000-member simulation holds 10⁸ states).
    public var metadata: MemberMetadata {
        get { self.metadataBox.value }
        set { self.metadataBox = MetadataBox(newValue) }
    }
    private var metadataBox: MetadataBox

    /// Creates a state.
    public init(
        id: PeerID,
        name: String,
        address: String,
        incarnation: UInt64,
        status: MemberStatus,
        metadata: MemberMetadata
    ) {
        self.id = id
        self.name = name
        self.address = address
        self.incarnation = incarnation
        self.status = status
        self.metadataBox = MetadataBox(metadata)
    }

    enum CodingKeys: String, CodingKey { case id, name, address, incarnation, status, metadata }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            id: try container.decode(PeerID.self, forKey: .id),
            name: try container.decode(String.self, forKey: .name),
            address: try container.decode(String.self, forKey: .address),
            incarnation: try container.decode(UInt64.self, forKey: .incarnation),
            status: try container.decode(MemberStatus.self, forKey: .status),
            metadata: try container.decode(MemberMetadata.self, forKey: .metadata)
        )
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(self.id, forKey: .id)
        try container.encode(self.name, forKey: .name)
        try container.encode(self.address, forKey: .address)
        try container.encode(self.incarnation, forKey: .incarnation)
        try container.encode(self.status, forKey: .status)
        try container.encode(self.metadata, forKey: .metadata)
    }

    public static func == (lhs: MemberState, rhs: MemberState) -> Bool {
        lhs.id == rhs.id && lhs.name == rhs.name && lhs.address == rhs.address && lhs.incarnation == rhs.incarnation
            && lhs.status == rhs.status
            && (lhs.metadataBox === rhs.metadataBox || lhs.metadata == rhs.metadata)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.id)
        hasher.combine(self.incarnation)
        hasher.combine(self.status)
        hasher.combine(self.metadata)
    }

    /// Whether this state supersedes `other` about the same member (SWIM §4.2): a higher incarnation
    /// wins; at equal incarnation the worse status wins (left > dead > suspect > alive).
    public func supersedes(_ other: MemberState) -> Bool {
        if self.incarnation != other.incarnation { return self.incarnation > other.incarnation }
        return self.status > other.status
    }
}

/// A member as this peer sees it, with when it last changed.
public struct Member<Instant: InstantProtocol>: Sendable, Hashable where Instant.Duration == Duration {
    /// The gossiped state.
    public var state: MemberState
    /// When this peer last saw its status or incarnation change.
    public var lastChange: Instant

    /// Creates a member.
    public init(state: MemberState, lastChange: Instant) {
        self.state = state
        self.lastChange = lastChange
    }
}

/// An immutable, shareable metadata value (see `MemberState.metadata`).
final class MetadataBox: Sendable {
    let value: MemberMetadata

    init(_ value: MemberMetadata) {
        self.value = value
    }
}
