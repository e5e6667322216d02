import VNSnapCore

/// Everything `vnsnap-peer status` shows; `--json` prints it as is, so field names are stable.
public struct PeerStatus: Sendable, Codable, Hashable {
    /// This peer.
    public struct Peer: Sendable, Codable, Hashable {
        /// Name.
        public var name: String
        /// Identity, hex.
        public var id: String
        /// Tunnel address it is bound to.
        public var bind: String
        /// Roles.
        public var roles: [String]
        /// Cluster name.
        public var cluster: String
        /// This run's session (changes on restart).
        public var session: UInt64
        /// Seconds since the daemon started.
        public var uptimeSeconds: Double
        /// Software version.
        public var version: String
        /// Process id of the daemon.
        public var pid: Int32
    }

    /// This peer.
    public var peer: Peer
    /// Members, election and keyring.
    public var membership: MembershipStatus
    /// The VIOLINs known here.
    public var violins: [Violin]
    /// Local VMs.
    public var vms: [VMSupervisor.VMStatus]
    /// Switch counters.
    public var `switch`: SwitchStatus
    /// The image store, on `store` peers: RAM and disk use, replicas.
    public var store: StoreService.Status?
    /// Store streams this relay joined across domains (on `relay` peers).
    public var splice: SpliceRelay.Status?
}
