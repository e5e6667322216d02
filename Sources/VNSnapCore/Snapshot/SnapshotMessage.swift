/// One message of the snapshot protocol between the initiator and a participant (DESIGN §6).
///
/// Requests come from the initiator and are retransmitted until answered; answers are idempotent, so a
/// duplicated or retransmitted request is simply answered again.
public struct SnapshotMessage: Sendable, Hashable, Codable {
    /// What the message says.
    public enum Body: Sendable, Hashable, Codable {
        /// Initiator → participant: open image streams, arm the switch for `plan`.
        case prepare(SnapshotPlan)
        /// Participant → initiator: ready (or not, and why); `holds` says whether it runs VMs of the VIOLIN.
        case prepared(ok: Bool, reason: String?, holds: Bool = false)
        /// Initiator → participant: the marker: cut every local VM of the plan not cut yet. `holders` are the
        /// participants running VMs, so a new initiator taking the snapshot over knows whose images it needs.
        case cut(holders: Set<PeerID>)
        /// Participant → initiator: every local VM is cut.
        case cutDone([VMCutReport])
        /// Participant → initiator: every local image is durable; repeated until `commit` or `abort`. The report
        /// (opaque to the protocol: the shell's per-VM image summaries) goes into the manifest.
        case durable([UInt8])
        /// Participant → initiator: it cannot go on (a VM's cut failed, or it heard nothing for too long and
        /// aborted itself before becoming durable): abort everywhere.
        case failed(String)
        /// Initiator → participant: the manifest (carried, as written) is durable; the snapshot exists.
        case commit([UInt8])
        /// Participant → initiator: committed here.
        case committed
        /// Initiator → participant: give up, discard partial images, leave the VMs running.
        case abort(SnapshotAbortReason)
        /// Participant → initiator: aborted here.
        case aborted
        /// Any peer → initiator: take a snapshot (`key.id` is the request's id, `key.violin` the VIOLIN); resent
        /// as a poll until the outcome comes back in `progress`. `wait`: queue it behind an operation running on
        /// the VIOLIN rather than refuse it.
        case request(mode: SnapshotMode, name: String, target: SnapshotTarget, wait: Bool = true)
        /// Initiator → requester: where the requested snapshot stands (`key` is the request's); `blob` carries
        /// the manifest once committed.
        case progress(SnapshotProgress)
        /// Restorer → holder of VMs (`key.id` the snapshot): carry out one step of restore `run`; `replay` says
        /// whether the channel logs are re-injected (off only to show what they are for); `moved` names the VMs
        /// restored away from the peer they ran on (it is not alive), and where.
        case restore(run: UInt64, step: RestoreStep, replay: Bool, moved: [String: PeerID])
        /// Holder → restorer: the step is done (or not, and why); `blob` carries per-VM timings (JSON).
        case restoreAnswer(run: UInt64, step: RestoreStep, ok: Bool, reason: String, blob: [UInt8])
        /// Any peer → every member: delete snapshot `key.id`'s images and catalog rows.
        case deleteSnapshot
        /// Member → deleting peer: done.
        case deleted
        /// Participant → initiator, while its images stream: bytes written so far per VM. Informational (shown
        /// by `snapshot` as it runs), sent periodically, never retransmitted.
        case streamed([VMStreamedBytes])
        /// New initiator → participant, after the snapshot's initiator was lost (DESIGN §6, failover): what do you
        /// hold for it? `term` is the new initiator's; a participant answers the highest term it has seen and
        /// from then on takes the outcome only from that initiator (its predecessors are fenced).
        case inquire(term: UInt64)
        /// Participant → new initiator: what it holds.
        case holding(SnapshotRecovery.Holding)
        /// Peer → peer, periodically (catalog sync): the snapshot ids of its catalog by state (JSON, opaque to the
        /// protocol), so a peer that was down learns the commits, deletions and aborts it missed; `reply` asks
        /// for the other's in return.
        case catalog(reply: Bool, blob: [UInt8])
        /// Peer → peer: send me the manifest of snapshot `key.id` (your catalog has it committed).
        case manifestWanted
        /// Peer → peer: the manifest of snapshot `key.id`, as committed.
        case manifest([UInt8])
        /// Any peer → initiator: may operation `key.id` (a restore or delete of `snapshot`) run on VIOLIN
        /// `key.violin`? Resent while it waits and, once granted, as the renewal of its lease. `wait`: queue it
        /// behind what runs rather than refuse it; `held`: it was granted by a previous initiator.
        case operation(kind: ViolinOperationKind, snapshot: UInt64, wait: Bool, held: Bool)
        /// Initiator → asker: the answer to `operation` (or to a `request`'s place in the queue).
        case operationAnswer(OperationAnswer)
        /// Any peer → initiator: operation `key.id` has ended; its VIOLIN or snapshot is free.
        case operationDone
        /// Ownership of VMs (issue 14; `OwnershipChange` as JSON, opaque to the protocol): restorer → initiator,
        /// record where restore `key.id` places the VMs it moves; initiator → restorer and every member, the
        /// records as written.
        case owners([UInt8])
    }

    /// Which run of the protocol.
    public var key: SnapshotKey
    /// The sender.
    public var from: PeerID
    /// The content.
    public var body: Body

    /// Creates a message.
    public init(key: SnapshotKey, from: PeerID, body: Body) {
        self.key = key
        self.from = from
        self.body = body
    }
}

/// Timing of the snapshot protocol.
public struct SnapshotSettings: Sendable, Hashable {
    /// Requests are resent this often until answered.
    public var retransmitInterval: Duration = .milliseconds(200)
    /// Longest wait for every participant to prepare.
    public var prepareTimeout: Duration = .seconds(10)
    /// Longest wait for every participant to finish its cuts.
    public var cutTimeout: Duration = .seconds(10)
    /// How long a participant that has prepared but is not cut yet waits for word from the initiator before
    /// aborting on its own (safe before it is durable: the initiator cannot commit without it).
    public var participantSilence: Duration = .seconds(30)
    /// Longest wait for every image to be durable.
    public var streamTimeout: Duration = .seconds(600)
    /// How long the initiator keeps telling participants of a commit or an abort before it stops waiting
    /// (they learn the outcome when they ask later).
    public var settleTimeout: Duration = .seconds(30)

    /// The defaults.
    public init() {}
}

/// How much of one VM's image has been written while it streams.
public struct VMStreamedBytes: Sendable, Hashable, Codable {
    /// The VM.
    public var vm: String
    /// Bytes of its image received from QEMU.
    public var rawBytes: UInt64
    /// The same after compression, as written.
    public var storedBytes: UInt64

    /// Creates a count.
    public init(vm: String, rawBytes: UInt64, storedBytes: UInt64) {
        self.vm = vm
        self.rawBytes = rawBytes
        self.storedBytes = storedBytes
    }
}

/// Where a requested snapshot stands, as the initiator tells the requester.
public struct SnapshotProgress: Sendable, Hashable, Codable {
    /// The snapshot's id (0 while not started).
    public var snapshotID: UInt64
    /// The phase, for people (`preparing`, `cutting`, `streaming`, `committed`, `aborted`, `refused`).
    public var phase: String
    /// Whether the snapshot has ended (committed, aborted or refused).
    public var finished: Bool
    /// Why it was aborted or refused, or a note.
    public var message: String
    /// The manifest, once committed.
    public var blob: [UInt8]

    /// Creates a progress report.
    public init(snapshotID: UInt64, phase: String, finished: Bool, message: String = "", blob: [UInt8] = []) {
        self.snapshotID = snapshotID
        self.phase = phase
        self.finished = finished
        self.message = message
        self.blob = blob
    }
}

/// The initiator's answer to an operation's ask (`ViolinOperations.Decision` on the wire).
public enum OperationAnswer: Sendable, Hashable, Codable {
    /// It may run (or keeps running).
    case granted
    /// It waits at `position` (1 = next) behind what `behind` describes.
    case queued(position: Int, behind: String)
    /// It may not run, and why.
    case refused(String)
}

/// The steps of a restore (DESIGN §7), each done by every peer holding VMs of the snapshot before the next.
///
/// A restore is a transaction: until every holder has done `pause`, the running VMs are untouched or only paused,
/// and `rollback` puts everything back as it was; `switchOver` is the switch-over and `resume` starts the group.
public enum RestoreStep: UInt8, Sendable, Hashable, Codable, CaseIterable {
    /// Check every chunk of every local image against the manifest; touch nothing.
    case verify = 1
    /// Start a new QEMU per VM beside the running one, paused, and load it from its verified image.
    case load = 2
    /// Pause the running VMs (reversibly): the last step before the switch-over.
    case pause = 3
    /// The switch-over: stop the old VMs, put the new ones in their place, re-inject the channel logs; the new VMs
    /// stay paused until every holder has switched over, so no restored VM's frame can overtake a channel log.
    case switchOver = 4
    /// Undo `load` and `pause`: stop the new QEMUs, resume the old VMs (after a failure before `switchOver`).
    case rollback = 5
    /// Resume every VM switched over, back to back (after a failed switch-over too: what did switch over runs).
    case resume = 6

    /// The steps a restore goes through, in order (`rollback` only on failure).
    public static let forward: [RestoreStep] = [.verify, .load, .pause, .switchOver, .resume]
}
