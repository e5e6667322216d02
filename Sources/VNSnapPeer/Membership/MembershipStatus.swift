import VNSnapCore

/// Membership as `status` shows it; stable JSON.
public struct MembershipStatus: Sendable, Codable, Hashable {
    /// One member, this peer included.
    public struct Member: Sendable, Codable, Hashable {
        /// Name.
        public var name: String
        /// Identity, hex.
        public var id: String
        /// Membership address.
        public var address: String
        /// Tunnel address.
        public var tunnel: String
        /// Roles.
        public var roles: [String]
        /// alive, suspect, dead or left.
        public var state: String
        /// Incarnation.
        public var incarnation: UInt64
        /// Seconds since this peer saw its state change.
        public var sinceChangeSeconds: Double
        /// Image store offered, in bytes.
        public var storeCapacity: UInt64
        /// Software version.
        public var version: String
        /// Generation of its keyring.
        public var keyringGeneration: UInt64
        /// Whether its keyring is the same as this peer's.
        public var keyringInSync: Bool
        /// Whether this is the peer answering.
        public var isSelf: Bool
        /// How it is reachable from other domains, as it measured itself (`public`, `endpoint-independent`,
        /// `symmetric`, `inbound blocked`, `unknown`).
        public var nat: String?
        /// The relays it keeps sessions with (names), when it is not publicly reachable.
        public var relays: [String]?
    }

    /// The initiator election as this peer sees it.
    public struct Election: Sendable, Codable, Hashable {
        /// The initiator's name; `nil` without a majority.
        public var initiator: String?
        /// Current term (never goes down, survives restarts).
        public var term: UInt64
        /// Whether this peer sees a majority of the known members alive.
        public var majority: Bool
        /// Members counted as known (not left), this peer included.
        public var known: Int
        /// Of those, alive or suspect.
        public var alive: Int
        /// Why the term could not be stored, if it could not (the peer then claims no initiator).
        public var termError: String?

        enum CodingKeys: String, CodingKey { case initiator, term, majority, known, alive, termError }

        /// Writes `initiator` even when there is none (`null`), so scripts can rely on the key.
        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(self.initiator, forKey: .initiator)
            try container.encode(self.term, forKey: .term)
            try container.encode(self.majority, forKey: .majority)
            try container.encode(self.known, forKey: .known)
            try container.encode(self.alive, forKey: .alive)
            try container.encodeIfPresent(self.termError, forKey: .termError)
        }
    }

    /// One installed key, never the key itself.
    public struct Key: Sendable, Codable, Hashable {
        /// BLAKE2b-256 fingerprint prefix.
        public var fingerprint: String
        /// Whether it seals.
        public var primary: Bool
    }

    /// The keyring.
    public struct KeyringInfo: Sendable, Codable, Hashable {
        /// Generation (raised by every `vnsnap-peer keys` change).
        public var generation: UInt64
        /// Installed keys, primary first.
        public var keys: [Key]
        /// The last datagram this peer could not open for want of its key, if any: who sent it and with which
        /// key id (a peer that missed a rotation, or one of another cluster).
        public var lastUnknownKey: String?
    }

    /// Every member, this peer first, then by name.
    public var members: [Member]
    /// The election.
    public var election: Election
    /// The keyring.
    public var keyring: KeyringInfo
    /// This peer's public address as other domains see it (the one mapping every observer agrees on), once known.
    public var publicAddress: String?
    /// Seeds not answered yet (empty once joined).
    public var waitingForSeeds: [String]
    /// Lifeguard's local health score (0 = healthy; probes slow down as it rises).
    public var localHealth: Int
    /// Membership datagrams sent and accepted.
    public var datagramsSent: UInt64
    /// Membership datagrams accepted.
    public var datagramsReceived: UInt64
    /// Membership datagrams refused, by reason.
    public var rejected: [TunnelDropReason: UInt64]
    /// What this peer forwarded on the membership socket as a relay, per peer served.
    public var served: [String: RelayServed]?
    /// Probes, suspicions, refutations and deaths declared since the peer started.
    public var counters: SWIMCounters?
}
