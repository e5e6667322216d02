/// What the switch must do with one frame.
public enum ForwardingDecision: Hashable, Sendable {
    /// Send to one local port.
    case port(PortID)
    /// Send through the tunnel to one peer.
    case tunnel(PeerID)
    /// Send to every local port of the VNI except `excluding`, and, if `tunnels`, to every tunnel.
    case flood(VNI, excluding: PortID?, tunnels: Bool)
    /// Do not send; count it under the reason.
    case drop(TunnelDropReason)
}

/// Where a frame entered the switch.
public enum Ingress: Hashable, Sendable {
    /// From a local VM's port.
    case port(PortID)
    /// From the tunnel of a peer, for a VNI.
    case tunnel(PeerID, VNI)
}

/// The switch's forwarding logic (DESIGN §4): per-VNI MAC learning, flooding within the VNI only, and
/// strict isolation between VNIs. No I/O: the shell asks for a decision and moves the bytes.
///
/// Tunnels form a full mesh, so a frame that came from a tunnel is never sent into another tunnel
/// (split horizon); that is what keeps floods from looping.
public struct SwitchCore<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    private var portVNI: [PortID: VNI] = [:]
    private var portsByVNI: [VNI: [PortID]] = [:]
    private var tables: [VNI: ForwardingTable<Instant>] = [:]
    private let ageingTime: Duration
    private let tableCapacity: Int

    /// An empty switch.
    public init(ageingTime: Duration = .seconds(300), tableCapacity: Int = 8192) {
        self.ageingTime = ageingTime
        self.tableCapacity = tableCapacity
    }

    /// Attaches a port to a VNI.
    public mutating func addPort(_ port: PortID, vni: VNI) {
        precondition(self.portVNI[port] == nil, "port \(port) added twice")
        self.portVNI[port] = vni
        self.portsByVNI[vni, default: []].append(port)
        if self.tables[vni] == nil {
            self.tables[vni] = ForwardingTable(ageingTime: self.ageingTime, capacity: self.tableCapacity)
        }
    }

    /// Detaches a port and forgets the addresses learned behind it.
    public mutating func removePort(_ port: PortID) {
        guard let vni = self.portVNI.removeValue(forKey: port) else { return }
        self.portsByVNI[vni]?.removeAll { $0 == port }
        self.tables[vni]?.forget(.port(port))
    }

    /// Forgets the addresses learned behind a peer's tunnel, in every VNI.
    public mutating func removeTunnel(_ peer: PeerID) {
        for vni in Array(self.tables.keys) {
            self.tables[vni]?.forget(.tunnel(peer))
        }
    }

    /// The VNI of a port, if attached.
    public func vni(of port: PortID) -> VNI? { self.portVNI[port] }

    /// Local ports of a VNI, in the order they were added.
    public func ports(in vni: VNI) -> [PortID] { self.portsByVNI[vni] ?? [] }

    /// Whether any local port is on `vni`.
    public func hasLocalPorts(in vni: VNI) -> Bool { !(self.portsByVNI[vni]?.isEmpty ?? true) }

    /// Learns the frame's source and decides where the frame goes.
    ///
    /// - Parameters:
    ///   - destination: the frame's destination MAC.
    ///   - source: the frame's source MAC.
    ///   - ingress: where it came in.
    ///   - now: the current time, for learning and ageing.
    public mutating func forward(
        destination: MACAddress,
        source: MACAddress,
        from ingress: Ingress,
        now: Instant
    ) -> ForwardingDecision {
        switch ingress {
        case .port(let port):
            guard let vni = self.portVNI[port] else { return .drop(.unknownVNI) }
            self.tables[vni]!.learn(source, at: .port(port), now: now)  // !-safe, because addPort creates it
            if destination.isMulticast {
                return .flood(vni, excluding: port, tunnels: true)
            }
            switch self.tables[vni]!.lookup(destination, now: now) {
            case .none:
                return .flood(vni, excluding: port, tunnels: true)
            case .port(let target):
                return target == port ? .drop(.hairpin) : .port(target)
            case .tunnel(let peer):
                return .tunnel(peer)
            }

        case .tunnel(let peer, let vni):
            guard self.tables[vni] != nil, self.hasLocalPorts(in: vni) else { return .drop(.unknownVNI) }
            self.tables[vni]!.learn(source, at: .tunnel(peer), now: now)  // !-safe, checked above
            if destination.isMulticast {
                return .flood(vni, excluding: nil, tunnels: false)
            }
            switch self.tables[vni]!.lookup(destination, now: now) {
            case .none:
                return .flood(vni, excluding: nil, tunnels: false)
            case .port(let target):
                return .port(target)
            case .tunnel(let other):
                return other == peer ? .drop(.hairpin) : .drop(.notLocal)
            }
        }
    }

    /// Sweeps aged entries from every table; returns how many went.
    @discardableResult
    public mutating func expire(now: Instant) -> Int {
        var removed = 0
        for vni in Array(self.tables.keys) {
            removed += self.tables[vni]!.expire(now: now)  // !-safe, iterating its own keys
        }
        return removed
    }

    /// The learned addresses of every VNI, for `status`.
    public func learnedAddresses(now: Instant) -> [VNI: [(MACAddress, SwitchLocation)]] {
        var result: [VNI: [(MACAddress, SwitchLocation)]] = [:]
        for (vni, table) in self.tables {
            result[vni] = table.snapshot.compactMap { address, entry in
                entry.lastSeen.duration(to: now) < self.ageingTime ? (address, entry.location) : nil
            }.sorted { $0.0.rawValue < $1.0.rawValue }
        }
        return result
    }
}
