/// Where each VM of a snapshot is restored (DESIGN §7, issue 14): where the operator says (`--on VM=PEER`: a
/// move, when the VM runs elsewhere now), else on the peer it runs on now while that peer is alive, else on the
/// surviving `vm` peer with the fewest of the snapshot's VMs so far (ties broken by rendezvous weight, so every peer
/// computes the same answer).
public enum RestorePlacement {
    /// One VM of the snapshot.
    public struct VM: Sendable, Hashable {
        /// Its name.
        public var name: String
        /// The peer it runs on now (its ownership record, else the peer it ran on at the cut).
        public var peer: PeerID
        /// That peer's name, for errors.
        public var peerName: String

        /// Creates a VM.
        public init(name: String, peer: PeerID, peerName: String) {
            self.name = name
            self.peer = peer
            self.peerName = peerName
        }
    }

    /// The VMs that move, to their new peers (VMs restored where they run are left out).
    ///
    /// - Parameters:
    ///   - alive: alive members, by id, with their names.
    ///   - hosts: alive members that run VMs (the `vm` role).
    ///   - chosen: the operator's choices, VM name → peer name.
    public static func place(
        _ vms: [VM],
        alive: [PeerID: String],
        hosts: Set<PeerID>,
        chosen: [String: String] = [:]
    ) throws(PlacementError) -> [String: PeerID] {
        let names = Set(vms.map(\.name))
        if let unknown = chosen.keys.sorted().first(where: { !names.contains($0) }) {
            throw PlacementError("--on \(unknown)=…: the snapshot has no VM \(unknown)")
        }
        let byName = Dictionary(alive.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a })
        var load: [PeerID: Int] = [:]
        for vm in vms where alive[vm.peer] != nil { load[vm.peer, default: 0] += 1 }
        var moved: [String: PeerID] = [:]
        // The operator's choices first, so the automatic ones count them.
        for vm in vms.sorted(by: { $0.name < $1.name }) {
            guard let target = chosen[vm.name] else { continue }
            guard let peer = byName[target] else {
                throw PlacementError("--on \(vm.name)=\(target): no alive peer \(target)")
            }
            guard hosts.contains(peer) else {
                throw PlacementError("--on \(vm.name)=\(target): \(target) does not have the vm role")
            }
            if alive[vm.peer] != nil { load[vm.peer, default: 0] -= 1 }
            if peer != vm.peer { moved[vm.name] = peer }
            load[peer, default: 0] += 1
        }
        for vm in vms.sorted(by: { $0.name < $1.name }) where alive[vm.peer] == nil && moved[vm.name] == nil {
            let key = StableHash.fnv1a(vm.name)
            let best = hosts.min { a, b in
                let (la, lb) = (load[a, default: 0], load[b, default: 0])
                if la != lb { return la < lb }
                let (wa, wb) = (ReplicaPlacement.weight(key, a), ReplicaPlacement.weight(key, b))
                return wa != wb ? wa > wb : a < b
            }
            guard let best else {
                throw PlacementError(
                    "VM \(vm.name) ran on \(vm.peerName), which is not alive, and no alive peer has the vm role"
                )
            }
            moved[vm.name] = best
            load[best, default: 0] += 1
        }
        return moved
    }
}
