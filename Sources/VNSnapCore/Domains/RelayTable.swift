/// A relay's side of its sessions (issue 15, DESIGN §10): which peers keep a session with this relay and where
/// their NATs map them (learned from their keepalives), a token bucket per forwarded pair, and what was forwarded
/// for whom. The relay never opens what it forwards; the shell checks only the envelope. Pure: time is a
/// parameter, the address type is the shell's.
public struct RelayTable<Address: Hashable & Sendable, Instant: InstantProtocol>: Sendable
where Instant.Duration == Duration {
    /// Limits.
    public struct Settings: Sendable, Hashable {
        /// A session lapses when no keepalive came for this long (three keepalive periods).
        public var sessionTimeout = Duration.seconds(30)
        /// Bytes per second one pair may send through this relay, each way.
        public var bytesPerSecond: Double = 64 * 1_048_576
        /// Bytes a pair may send at once above the rate.
        public var burst: Double = 8 * 1_048_576

        /// The defaults.
        public init() {}
    }

    /// Why a datagram is not forwarded.
    public enum Refusal: Error, Sendable, Hashable {
        /// The destination keeps no session here (or it lapsed).
        case noSession
        /// The pair is over its rate cap.
        case rateCapped
    }

    /// What was forwarded to and from one peer.
    public typealias Served = RelayServed

    struct Session: Sendable {
        var address: Address
        var lastSeen: Instant
    }

    struct Pair: Hashable, Sendable {
        var source: PeerID
        var destination: PeerID
    }

    struct Bucket: Sendable {
        var tokens: Double
        var updated: Instant
    }

    let settings: Settings
    var sessions: [PeerID: Session] = [:]
    var buckets: [Pair: Bucket] = [:]
    /// Counters per peer (as source or destination), kept while the peer has a session or traffic.
    public private(set) var served: [PeerID: Served] = [:]

    /// An empty table.
    public init(settings: Settings = Settings()) {
        self.settings = settings
    }

    /// A keepalive of `peer` arrived from `address` (where its NAT maps it): the session starts or goes on there.
    public mutating func hello(from peer: PeerID, at address: Address, now: Instant) {
        self.sessions[peer] = Session(address: address, lastSeen: now)
        if self.served[peer] == nil { self.served[peer] = Served() }
    }

    /// Where a session's peer is reached, while the session lasts.
    public func address(of peer: PeerID, now: Instant) -> Address? {
        guard let session = self.sessions[peer], session.lastSeen.duration(to: now) <= self.settings.sessionTimeout
        else { return nil }
        return session.address
    }

    /// The peers with a live session.
    public func sessionPeers(now: Instant) -> [PeerID] {
        self.sessions.filter { $0.value.lastSeen.duration(to: now) <= self.settings.sessionTimeout }.keys.sorted()
    }

    /// A datagram of `bytes` from `source` for `destination`: where to send it, or why not.
    public mutating func forward(
        from source: PeerID,
        to destination: PeerID,
        bytes: Int,
        now: Instant
    ) -> Result<Address, Refusal> {
        guard let address = self.address(of: destination, now: now) else {
            self.served[destination, default: Served()].refused &+= 1
            return .failure(.noSession)
        }
        let pair = Pair(source: source, destination: destination)
        var bucket = self.buckets[pair] ?? Bucket(tokens: self.settings.burst, updated: now)
        let elapsed = bucket.updated.duration(to: now)
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        bucket.tokens = min(self.settings.burst, bucket.tokens + max(0, seconds) * self.settings.bytesPerSecond)
        bucket.updated = now
        guard bucket.tokens >= Double(bytes) else {
            self.buckets[pair] = bucket
            self.served[destination, default: Served()].refused &+= 1
            return .failure(.rateCapped)
        }
        bucket.tokens -= Double(bytes)
        self.buckets[pair] = bucket
        for peer in [source, destination] {
            self.served[peer, default: Served()].bytes &+= UInt64(bytes)
            self.served[peer, default: Served()].datagrams &+= 1
        }
        return .success(address)
    }

    /// Forgets lapsed sessions and the buckets and counters of peers that are gone.
    public mutating func expire(now: Instant) {
        let live = Set(self.sessionPeers(now: now))
        self.sessions = self.sessions.filter { live.contains($0.key) }
        self.buckets = self.buckets.filter { live.contains($0.key.source) || live.contains($0.key.destination) }
        let active = live.union(self.buckets.keys.flatMap { [$0.source, $0.destination] })
        self.served = self.served.filter { active.contains($0.key) }
    }
}

/// What a relay forwarded to and from one peer (issue 15), as `status` shows it.
public struct RelayServed: Sendable, Hashable, Codable {
    /// Bytes forwarded from or to the peer.
    public var bytes: UInt64 = 0
    /// Datagrams forwarded from or to the peer.
    public var datagrams: UInt64 = 0
    /// Datagrams refused (no session, rate cap).
    public var refused: UInt64 = 0

    /// Nothing yet.
    public init() {}
}
