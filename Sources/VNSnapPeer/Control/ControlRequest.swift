import VNSnapCore

/// One request on the control socket: a JSON object on one line.
public struct ControlRequest: Sendable, Codable, Hashable {
    /// What to do: `status`, `leave`, or `keys` (with `keyChange`).
    public var command: String
    /// For `keys`: the cluster-wide keyring change.
    public var keyChange: KeyringChange?
    /// For `snapshot`: what to take.
    public var snapshot: SnapshotOrder?
    /// For `show`, `delete`, `restore`: the snapshot id.
    public var id: UInt64?
    /// For `restore`: the operator confirmed stopping the VIOLIN's running VMs.
    public var yes: Bool?
    /// For `restore`: re-inject the channel logs (default true; false only to show what they are for).
    public var replay: Bool?
    /// For `restore`: where to run VMs (VM name → peer name): a lost peer's, or one moved from an alive peer; the
    /// others run where they run now. For `move`: the one VM and its new peer.
    public var on: [String: String]?
    /// For `snapshot` and `restore`: wait behind an operation already running on the VIOLIN (default true), or
    /// be refused at once, naming it.
    public var wait: Bool?
    /// For `stall`: the VIOLIN and how long to measure, seconds; for `move`: the VM's VIOLIN, if given.
    public var violin: String?
    public var seconds: Double?

    /// Creates a request.
    public init(
        command: String,
        keyChange: KeyringChange? = nil,
        snapshot: SnapshotOrder? = nil,
        id: UInt64? = nil,
        yes: Bool? = nil,
        replay: Bool? = nil,
        on: [String: String]? = nil,
        violin: String? = nil,
        seconds: Double? = nil,
        wait: Bool? = nil
    ) {
        self.command = command
        self.keyChange = keyChange
        self.snapshot = snapshot
        self.id = id
        self.yes = yes
        self.replay = replay
        self.on = on
        self.violin = violin
        self.seconds = seconds
        self.wait = wait
    }
}

/// What `vnsnap-peer snapshot` asks for.
public struct SnapshotOrder: Sendable, Codable, Hashable {
    /// The VIOLIN.
    public var violin: String
    /// The cut mode.
    public var mode: SnapshotMode
    /// The operator's name for it.
    public var name: String
    /// Where the images go (`nil`: each VM's peer's disk).
    public var target: SnapshotTarget?

    /// Creates an order.
    public init(violin: String, mode: SnapshotMode, name: String, target: SnapshotTarget? = nil) {
        self.violin = violin
        self.mode = mode
        self.name = name
        self.target = target
    }
}

/// The answer to one request: a JSON object on one line.
public struct ControlResponse: Sendable, Codable, Hashable {
    /// Whether the request succeeded.
    public var ok: Bool
    /// Why not, if it did not.
    public var error: String?
    /// The status, for `status` (and after `keys`, so the caller sees the new keyring).
    public var status: PeerStatus?
    /// A progress line of a long request (`snapshot`, `restore`); the final answer has none.
    public var progress: String?
    /// For `list`: the committed snapshots.
    public var snapshots: [SnapshotCatalog.Entry]?
    /// For `snapshot` and `show`: the manifest.
    public var manifest: SnapshotManifest?
    /// For `restore`: per step, per peer, the timings.
    public var restore: [String: [String: RestoreTimings]]?
    /// Remarks for the operator (members that did not answer a delete, ...).
    public var notes: [String]?
    /// For `stall`: the longest payload gap per local VM, nanoseconds.
    public var stalls: [String: UInt64]?
    /// For `show` of a snapshot on store peers: VM → store → where the store holds its image now.
    public var replicaLocations: [String: [String: String]]?
    /// For `schedules`: where each schedule stands.
    public var schedules: [ScheduleRunner.Status]?

    /// Creates a response.
    public init(
        ok: Bool,
        error: String? = nil,
        status: PeerStatus? = nil,
        progress: String? = nil,
        snapshots: [SnapshotCatalog.Entry]? = nil,
        manifest: SnapshotManifest? = nil,
        restore: [String: [String: RestoreTimings]]? = nil,
        notes: [String]? = nil,
        stalls: [String: UInt64]? = nil,
        replicaLocations: [String: [String: String]]? = nil,
        schedules: [ScheduleRunner.Status]? = nil
    ) {
        self.ok = ok
        self.error = error
        self.status = status
        self.progress = progress
        self.snapshots = snapshots
        self.manifest = manifest
        self.restore = restore
        self.notes = notes
        self.stalls = stalls
        self.replicaLocations = replicaLocations
        self.schedules = schedules
    }
}
