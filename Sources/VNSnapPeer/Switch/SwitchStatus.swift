import VNSnapCore

/// The switch's counters as `status` shows them; stable JSON.
public struct SwitchStatus: Sendable, Codable, Hashable {
    /// One VM port.
    public struct Port: Sendable, Codable, Hashable {
        /// The VM behind the port.
        public var vm: String
        /// Its VIOLIN.
        public var violin: String
        /// The VIOLIN's VNI.
        public var vni: UInt32
        /// The VM's epoch, carried on every frame it sends.
        public var epoch: UInt32
        /// Traffic from and to the VM.
        public var counters: TrafficCounters
        /// Frames its epoch gate held while snapshots cut it (delivered when the cut was done).
        public var held: UInt64
        /// Frames recorded into snapshots' channel logs for it (the channel state).
        public var recorded: UInt64
    }

    /// One tunnel to another peer.
    public struct Tunnel: Sendable, Codable, Hashable {
        /// The other peer's name.
        public var peer: String
        /// Its UDP address.
        public var address: String
        /// The path frames take to it: `direct`, `punched`, `punching`, or `via relay NAME` (issue 15).
        public var path: String?
        /// Where its tunnel socket is seen from outside, when it sits behind relays.
        public var observed: String?
        /// How often a punched path to it was given up for the relay.
        public var flaps: Int?
        /// Whether its datagrams are sealed with the pair's keys (derived from both exchange keys, so no relay can
        /// open them) rather than the cluster's alone.
        public var endToEnd: Bool?
        /// Whether membership sees the peer alive (a down tunnel neither sends nor accepts).
        public var up: Bool
        /// The other peer's current session, once heard from.
        public var remoteSession: UInt64?
        /// Next sequence number this peer will send.
        public var nextSequence: UInt64
        /// Frames through the tunnel (rx = opened from the peer, tx = sealed to it).
        public var counters: TrafficCounters
    }

    /// Ports, in configuration order.
    public var ports: [Port]
    /// Tunnels, by peer name.
    public var tunnels: [Tunnel]
    /// Datagrams dropped at the tunnel socket before they could be attributed to a tunnel, by reason.
    public var rejected: [TunnelDropReason: UInt64]
    /// The relays this peer keeps tunnel sessions with (it is not publicly reachable).
    public var relays: [String]?
    /// Where those relays see this peer's tunnel socket.
    public var mapping: String?
    /// What this peer forwarded as a relay, per peer it served.
    public var served: [String: RelayServed]?

    /// Learned MAC addresses per VNI.
    public var learned: [String: Int]
}
