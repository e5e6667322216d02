/// How a peer is reachable from other domains (issue 15, DESIGN §10), as `status` shows it.
public enum NATType: String, Sendable, Hashable, Codable {
    /// Not enough observations yet.
    case unknown
    /// Its datagrams arrive from the address it is bound to, and unsolicited ones reach it.
    case `public` = "public"
    /// Behind a NAT that keeps one public mapping whatever the destination (hole punching works).
    case endpointIndependent = "endpoint-independent"
    /// Behind a NAT that picks a new public port per destination (only relays reach it).
    case symmetric
    /// Nothing unsolicited ever reaches it (a firewall): others reach it only through relays or punched paths.
    case inboundBlocked = "inbound blocked"

    /// Whether a hole punch between peers of these two kinds can work (both sides must keep one mapping, or
    /// one side must accept unsolicited datagrams).
    public static func punchable(_ a: NATType, _ b: NATType) -> Bool {
        if a == .public || b == .public { return true }
        return a != .symmetric && b != .symmetric && a != .unknown && b != .unknown
    }
}

/// Classifies this peer's NAT from its own traffic (no STUN server): every membership ack says from which address
/// the responder saw the request. Observers count as different domains when they are reached at different
/// public addresses. Pure.
public struct NATClassifier: Sendable, Hashable {
    /// The address this peer's membership socket is bound to (its own idea of itself).
    public let local: HostPort
    /// The latest observation of each observer, keyed by the observer's own address as this peer reaches it
    /// (its domain), so two observers behind one NAT count once.
    public private(set) var observations: [String: HostPort] = [:]
    /// Whether a datagram ever arrived from a peer this peer had not sent to first (so inbound is not blocked).
    public private(set) var unsolicitedInbound = false

    /// A classifier for a peer bound at `local`.
    public init(local: HostPort) {
        self.local = local
    }

    /// Observer at `observerHost` (the public address this peer reaches it at) saw this peer's datagram come from
    /// `observed`.
    public mutating func observed(_ observed: HostPort, by observerHost: String) {
        self.observations[observerHost] = observed
    }

    /// A datagram arrived that no datagram of this peer asked for (the sender had not been sent to).
    public mutating func inboundUnsolicited() {
        self.unsolicitedInbound = true
    }

    /// The classification now.
    public var type: NATType {
        let seen = Set(self.observations.values)
        guard !seen.isEmpty else { return .unknown }
        if seen.count > 1 {
            // Different public mappings for different destinations.
            return Set(seen.map(\.port)).count > 1 || Set(seen.map(\.host)).count > 1 ? .symmetric : .unknown
        }
        let only = seen.first!  // !-safe, not empty
        if only.port == self.local.port, only.host == self.local.host || self.local.host == "0.0.0.0" {
            // Not translated. Reachable once something it never sent to reached it; blocked only when two domains
            // saw it and still nothing came unasked (one observer alone is not evidence enough).
            if self.unsolicitedInbound { return .public }
            return self.observations.count >= 2 ? .inboundBlocked : .unknown
        }
        // One mapping so far: endpoint-independent once two domains agree on it.
        return self.observations.count >= 2 ? .endpointIndependent : .unknown
    }

    /// The public address others should try, once known (the one mapping every observer agrees on).
    public var publicAddress: HostPort? {
        let seen = Set(self.observations.values)
        return seen.count == 1 ? seen.first : nil
    }
}
