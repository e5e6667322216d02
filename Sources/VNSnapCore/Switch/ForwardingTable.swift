/// Where a learned MAC address lives, seen from one switch.
public enum SwitchLocation: Hashable, Sendable {
    /// Behind a local VM port.
    case port(PortID)
    /// Behind the tunnel to another peer.
    case tunnel(PeerID)
}

/// A local VM port's identity inside one switch.
public struct PortID: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// Index assigned by the switch.
    public var rawValue: Int

    /// Wraps an index.
    public init(_ rawValue: Int) { self.rawValue = rawValue }

    public static func < (lhs: PortID, rhs: PortID) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { "port\(self.rawValue)" }
}

/// One VNI's MAC learning table with ageing.
///
/// Generic over the instant type so tests drive it with a fake clock.
public struct ForwardingTable<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// One learned address.
    public struct Entry: Sendable, Hashable {
        /// Where frames for this address go.
        public var location: SwitchLocation
        /// When the address was last seen as a source.
        public var lastSeen: Instant
    }

    /// How long an address stays learned without being seen again.
    public var ageingTime: Duration
    /// Upper bound on learned addresses, so a MAC flood cannot exhaust memory.
    public var capacity: Int
    private(set) var entries: [MACAddress: Entry] = [:]

    /// An empty table.
    public init(ageingTime: Duration = .seconds(300), capacity: Int = 8192) {
        self.ageingTime = ageingTime
        self.capacity = capacity
    }

    /// Number of entries, including any not yet swept.
    public var count: Int { self.entries.count }

    /// Learns that `address` was seen at `location` at `now`. Multicast sources are never learned.
    public mutating func learn(_ address: MACAddress, at location: SwitchLocation, now: Instant) {
        guard !address.isMulticast else { return }
        if self.entries[address] == nil, self.entries.count >= self.capacity {
            self.expire(now: now)
            guard self.entries.count < self.capacity else { return }
        }
        self.entries[address] = Entry(location: location, lastSeen: now)
    }

    /// Where `address` lives, or `nil` if unknown or aged out.
    public func lookup(_ address: MACAddress, now: Instant) -> SwitchLocation? {
        guard let entry = self.entries[address] else { return nil }
        guard entry.lastSeen.duration(to: now) < self.ageingTime else { return nil }
        return entry.location
    }

    /// Removes entries not seen within the ageing time; returns how many went.
    @discardableResult
    public mutating func expire(now: Instant) -> Int {
        let before = self.entries.count
        self.entries = self.entries.filter { $0.value.lastSeen.duration(to: now) < self.ageingTime }
        return before - self.entries.count
    }

    /// Forgets every address behind `location` (a port removed, a tunnel gone).
    public mutating func forget(_ location: SwitchLocation) {
        self.entries = self.entries.filter { $0.value.location != location }
    }

    /// A snapshot of the learned entries, for `status`.
    public var snapshot: [MACAddress: Entry] { self.entries }
}
