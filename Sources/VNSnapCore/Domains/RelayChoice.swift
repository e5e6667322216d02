/// Which relays a peer that is not publicly reachable keeps sessions with (issue 15, DESIGN §10): `k` of the
/// `relay` peers, spread over at least two domains where there are two, chosen by rendezvous hash (every peer
/// ranks the relays differently, so they are not all picked by everyone) with a cap of peers per relay, and
/// moving as little as possible when the set of relays changes. Pure.
public enum RelayChoice {
    /// One relay a peer may use.
    public struct Relay: Sendable, Hashable {
        /// The relay.
        public var id: PeerID
        /// Its domain (its public address's host, or an operator's label).
        public var domain: String
        /// How many peers use it now (as gossiped), this peer not counted.
        public var load: Int

        /// Creates a relay.
        public init(id: PeerID, domain: String, load: Int = 0) {
            self.id = id
            self.domain = domain
            self.load = load
        }
    }

    /// The relays for `peer`: the ones of `current` still offered (kept: no churn), then the best by rendezvous
    /// weight among those under `cap`, a new domain first while fewer than two are covered, up to `k`. A relay
    /// over its cap is taken only when nothing else is left.
    public static func choose(
        for peer: PeerID,
        from relays: [Relay],
        k: Int = 3,
        cap: Int = 32,
        current: [PeerID] = []
    ) -> [PeerID] {
        let offered = Dictionary(relays.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var chosen = current.filter { offered[$0] != nil && $0 != peer }.prefix(k).map { $0 }
        let key = peer.rawValue
        let ranked = relays.filter { $0.id != peer && !chosen.contains($0.id) }.sorted {
            let (wa, wb) = (ReplicaPlacement.weight(key, $0.id), ReplicaPlacement.weight(key, $1.id))
            return wa != wb ? wa > wb : $0.id < $1.id
        }
        var candidates = ranked.filter { $0.load < cap } + ranked.filter { $0.load >= cap }
        while chosen.count < k, !candidates.isEmpty {
            let domains = Set(chosen.compactMap { offered[$0]?.domain })
            let index =
                domains.count < 2
                ? candidates.firstIndex { !domains.contains($0.domain) } ?? 0
                : 0
            chosen.append(candidates.remove(at: index).id)
        }
        return chosen
    }
}
