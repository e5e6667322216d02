/// How a snapshot cuts its VMs (DESIGN §6).
public enum SnapshotMode: String, Sendable, Hashable, Codable, CaseIterable {
    /// Cut at a short pause, save RAM copy-on-write in the background (QEMU `background-snapshot`).
    case cow
    /// Cut at the end of a pre-copy migration, final pauses lined up by the initiator.
    case precopy
    /// VNsnap's policy, for comparison: frames from the new epoch to a VM not yet cut are dropped.
    case drop
    /// What a libvirt or Proxmox user gets, for comparison: one VM's snapshot after another, each complete
    /// before the next begins, with no epochs and no channel state (not a consistent cut).
    case loop
}

/// Where a snapshot's images go (DESIGN §7).
public struct SnapshotTarget: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The kind of target.
    public enum Kind: String, Sendable, Hashable, Codable, CaseIterable {
        /// Each VM's peer's own disk (VNsnap-disk).
        case disk
        /// The RAM of `replicas` store peers, flushed to their disks in the background (VNsnap-memory).
        case memory
    }

    /// The kind.
    public var kind: Kind
    /// Copies of each image (memory targets; 0 for disk).
    public var replicas: Int

    /// Creates a target.
    public init(kind: Kind, replicas: Int) {
        self.kind = kind
        self.replicas = kind == .disk ? 0 : replicas
    }

    /// The local disk of each VM's peer.
    public static let disk = SnapshotTarget(kind: .disk, replicas: 0)

    public var description: String { self.kind == .disk ? "disk" : "memory ×\(self.replicas)" }
}

/// Names one run of the snapshot protocol: every message carries it, and a lower term is refused.
public struct SnapshotKey: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The snapshot's identity (unique per cluster).
    public var id: UInt64
    /// The VIOLIN being snapshotted.
    public var violin: String
    /// The epoch its VMs move to at their cut.
    public var epoch: UInt32
    /// The initiator's election term.
    public var term: UInt64

    /// Creates a key.
    public init(id: UInt64, violin: String, epoch: UInt32, term: UInt64) {
        self.id = id
        self.violin = violin
        self.epoch = epoch
        self.term = term
    }

    public var description: String { "snapshot \(self.id) of \(self.violin) (epoch \(self.epoch), term \(self.term))" }
}

/// What the initiator decided before preparing: who takes part and which of their VMs are cut.
public struct SnapshotPlan: Sendable, Hashable, Codable {
    /// The VMs each participant runs, by peer.
    public var vms: [PeerID: [String]]
    /// The cut mode.
    public var mode: SnapshotMode
    /// The VIOLIN's VNI (peers without a VM of it still close their channels with end-of-epoch markers).
    public var vni: UInt32
    /// Where the images go.
    public var target: SnapshotTarget
    /// The operator's name for the snapshot (a new initiator taking it over writes it into the manifest).
    public var name: String

    /// Creates a plan.
    public init(
        vms: [PeerID: [String]],
        mode: SnapshotMode,
        vni: UInt32 = 0,
        target: SnapshotTarget = .disk,
        name: String = ""
    ) {
        self.vms = vms
        self.mode = mode
        self.vni = vni
        self.target = target
        self.name = name
    }

    /// Every participant.
    public var participants: Set<PeerID> { Set(self.vms.keys) }
}

/// One VM's cut as its peer measured it.
public struct VMCutReport: Sendable, Hashable, Codable {
    /// The VM.
    public var vm: String
    /// When the cut happened, in nanoseconds of the participant's wall clock (for cut skew).
    public var cutAtNanoseconds: UInt64
    /// How long it was paused (STOP to RESUME), in nanoseconds.
    public var downtimeNanoseconds: UInt64
    /// Whether a frame of the new epoch triggered the cut before the marker arrived.
    public var triggered: Bool

    /// Creates a report.
    public init(vm: String, cutAtNanoseconds: UInt64, downtimeNanoseconds: UInt64, triggered: Bool) {
        self.vm = vm
        self.cutAtNanoseconds = cutAtNanoseconds
        self.downtimeNanoseconds = downtimeNanoseconds
        self.triggered = triggered
    }
}

/// Why a snapshot was aborted, for the operator.
public struct SnapshotAbortReason: Error, Sendable, Hashable, Codable, CustomStringConvertible {
    /// What went wrong, naming the phase and the peer or VM.
    public var message: String

    /// Creates a reason.
    public init(_ message: String) {
        self.message = message
    }

    public var description: String { self.message }
}
