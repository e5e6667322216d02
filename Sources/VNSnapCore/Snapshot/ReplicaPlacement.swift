/// Where each VM's image replicas go (DESIGN §6, plan): rendezvous hashing over the `store` peers.
///
/// Every store gets a weight per VM from a stable hash of the two; a VM's replicas go to the stores of
/// highest weight, so every peer computes the same placement from the same view, a VM keeps its stores from
/// one snapshot to the next, a store joining or leaving moves only the replicas it wins or held, and VMs
/// spread evenly. The VM's own host comes last whatever its weight (a replica there dies with the VM's host),
/// and a store without room for the image is passed over; when fewer than `replicas` stores can take a VM,
/// the plan is refused naming the VM and every store's room, before any VM is cut.
public enum ReplicaPlacement {
    /// A store as the plan sees it.
    public struct Store: Sendable, Hashable {
        /// The store peer.
        public var peer: PeerID
        /// Its name, for errors.
        public var name: String
        /// RAM it can still give to replicas, bytes.
        public var freeBytes: UInt64

        /// Creates a store.
        public init(peer: PeerID, name: String, freeBytes: UInt64) {
            self.peer = peer
            self.name = name
            self.freeBytes = freeBytes
        }
    }

    /// One VM's image to place.
    public struct Image: Sendable, Hashable {
        /// The VM.
        public var vm: String
        /// The peer it runs on.
        public var host: PeerID
        /// Room one replica needs (its RAM size bounds the stored image).
        public var bytes: UInt64

        /// Creates an image.
        public init(vm: String, host: PeerID, bytes: UInt64) {
            self.vm = vm
            self.host = host
            self.bytes = bytes
        }
    }

    /// The stores in preference order for `vm` running on `host`: highest weight first, `host` last.
    public static func order(vm: String, host: PeerID, stores: [PeerID]) -> [PeerID] {
        let key = StableHash.fnv1a(vm)
        return stores.sorted { a, b in
            if (a == host) != (b == host) { return b == host }
            let (wa, wb) = (Self.weight(key, a), Self.weight(key, b))
            return wa != wb ? wa > wb : a < b
        }
    }

    /// Places `replicas` copies of every image, reserving each store's room as it goes (largest images first,
    /// so a big VM is not starved by small ones). Returns the stores per VM, in preference order.
    public static func place(_ images: [Image], stores: [Store], replicas: Int) throws(PlacementError)
        -> [String: [PeerID]]
    {
        guard replicas >= 1 else { throw PlacementError("at least one replica per image is needed, not \(replicas)") }
        var free = Dictionary(stores.map { ($0.peer, $0.freeBytes) }, uniquingKeysWith: { a, _ in a })
        var placed: [String: [PeerID]] = [:]
        for image in images.sorted(by: { $0.bytes != $1.bytes ? $0.bytes > $1.bytes : $0.vm < $1.vm }) {
            var chosen: [PeerID] = []
            for peer in Self.order(vm: image.vm, host: image.host, stores: Array(free.keys))
            where chosen.count < replicas && free[peer, default: 0] >= image.bytes {
                chosen.append(peer)
                free[peer, default: 0] -= image.bytes
            }
            guard chosen.count == replicas else {
                let room = stores.sorted { $0.name < $1.name }.map {
                    "\($0.name) \(ByteCount.mebibytes(free[$0.peer, default: 0])) MiB free"
                }
                throw PlacementError(
                    "VM \(image.vm) needs \(replicas) replicas of \(ByteCount.mebibytes(image.bytes)) MiB; only \(chosen.count) store(s) have room (\(room.isEmpty ? "no store peers alive" : room.joined(separator: ", ")))"
                )
            }
            placed[image.vm] = chosen
        }
        return placed
    }

    static func weight(_ key: UInt64, _ peer: PeerID) -> UInt64 {
        StableHash.mix(key ^ StableHash.mix(peer.rawValue))
    }

}

/// A placement that cannot be made, saying which VM and why.
public struct PlacementError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What is wrong.
    public var message: String

    /// Creates an error.
    public init(_ message: String) { self.message = message }

    public var description: String { self.message }
}
