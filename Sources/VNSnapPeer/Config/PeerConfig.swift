import VNSnapCore
import VNSnapCrypto

/// A peer's whole configuration, validated: what `vnsnap-peer run --config FILE` runs.
public struct PeerConfig: Sendable {
    /// This peer.
    public struct Peer: Sendable, Hashable {
        /// Unique name in the cluster; its `PeerID` derives from it.
        public var name: String
        /// UDP address the switch's tunnels bind to.
        public var bind: HostPort
        /// Where VM sockets, logs and images live.
        public var dataDirectory: String
        /// Unix socket of the control API (`status` talks to it).
        public var controlSocket: String
        /// What this peer does.
        public var roles: Set<PeerRole>
        /// Bytes of image store offered to the cluster (0 without the `store` role).
        public var storeCapacity: UInt64
        /// On SIGTERM, leave the VMs running for the next start of the peer to reattach (an upgrade) instead of
        /// stopping them (`keep_vms`, or `run --keep-vms`).
        public var keepVMs: Bool = false
        /// Pause this peer's VMs once it has seen no majority for this long, and resume the ones it still owns
        /// when it sees one again (`fence_after_s`; off when `nil`).
        public var fenceAfter: Duration? = nil
        /// Bytes of each VM's save stream read ahead of compression (`image_read_ahead_mib`; 0: read as compressed).
        public var imageReadAhead: Int = Self.defaultReadAheadMiB << 20
        /// Compress images at nice 10, yielding the CPU to the guests (`image_low_priority`).
        public var imageLowPriority = false
        /// Bytes let gather in each VM's save-stream socket before the writer reads (`image_read_batch_kib`; 0: read
        /// what arrives), so QEMU's migration thread is not preempted by the reader after every write.
        public var imageReadBatch = 0
        /// The default read-ahead, MiB (BENCHMARKS: the copy-on-write stall).
        public static let defaultReadAheadMiB = 0

        /// This peer's identity.
        public var id: PeerID { PeerID(name: self.name) }
    }

    /// The cluster this peer belongs to.
    public struct Cluster: Sendable, Hashable {
        /// Name; bound into every key, so clusters with different names never talk.
        public var name: String
        /// Path of the keyring file.
        public var keyringPath: String
    }

    /// How this peer takes part in membership (DESIGN §5).
    public struct Membership: Sendable, Hashable {
        /// UDP address the membership socket binds to.
        public var bind: HostPort
        /// The address other peers reach the membership socket at (the bind address unless set).
        public var advertise: HostPort
        /// Membership addresses of peers to join through; any alive member is enough, none means "start alone".
        public var seeds: [HostPort]
        /// The host other peers reach this peer's tunnel socket at.
        public var tunnelHost: String
        /// Probe interval.
        public var probeInterval: Duration
        /// Direct probe timeout.
        public var probeTimeout: Duration
        /// α: suspicion starts at α·log10(n) probe intervals.
        public var suspicionMultiplier: Double
        /// Where the durable election term is kept.
        public var termFile: String
    }

    /// The file it was read from.
    public var path: String
    /// This peer.
    public var peer: Peer
    /// The cluster.
    public var cluster: Cluster
    /// The keyring, loaded and checked.
    public var keyring: Keyring
    /// Membership.
    public var membership: Membership
    /// VIOLINs known to this peer.
    public var violins: [Violin]
    /// VMs this peer runs.
    public var vms: [VMDefinition]
    /// Snapshot schedules; every peer lists the same, and the initiator runs them.
    public var schedules: [SnapshotSchedule] = []
    /// Where `GET /metrics` (Prometheus text format) listens; `nil`: off.
    public var metrics: HostPort? = nil

    /// The VIOLIN called `name`.
    public func violin(named name: String) -> Violin? {
        self.violins.first { $0.name == name }
    }

    /// Directory of one VM's sockets and logs.
    public func vmDirectory(_ vm: String) -> String { "\(self.peer.dataDirectory)/vms/\(vm)" }

    /// The switch port socket of one VM.
    public func switchPortSocket(_ vm: String) -> String { "\(self.peer.dataDirectory)/ports/\(vm).sock" }
}
