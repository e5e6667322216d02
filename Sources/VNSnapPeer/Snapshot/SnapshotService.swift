import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import VNSnapCore
import VNSnapCrypto
import VNSnapHypervisor
import VNSnapImage

/// The snapshot protocol's shell on one peer (DESIGN §6): runs the initiator's side when this peer is the
/// initiator, the participant's side for its own VMs, and the requester's side for `vnsnap-peer snapshot`.
///
/// The protocol itself is in `SnapshotInitiator`, `SnapshotParticipant`, `RestoreCoordinator` and
/// `ViolinOperations`; this actor carries out their directives with membership (messages), the switch (epochs),
/// QMP (cuts) and the image writers.
///
/// A `Service` of the daemon's group: everything that reaches it (messages, the switch's triggers, members going
/// down, timers) goes through one ordered inbox, so arrival order is handling order; long work (preparing, cuts,
/// durability, restore steps, clean-ups) runs in its task group and hands its result back through the inbox.
/// Graceful shutdown ends the inbox and cancels that work. The machines are ticked when they asked to be
/// (`scheduleTick`); housekeeping (retransmitting restores, progress, takeovers, catalog sync, leases) runs every
/// `housekeepingInterval`.
public actor SnapshotService: Service {
    /// What the inbox carries.
    enum Event: Sendable {
        /// A snapshot message from membership (or from this peer to itself).
        case message(SnapshotMessage)
        /// A frame of a new epoch reached a local VM not cut yet.
        case triggered(String)
        /// A member died or left.
        case memberDown(String)
        /// A machine's scheduled tick may be due.
        case wake
        /// The periodic housekeeping.
        case housekeeping
        /// Start this work in the service's task group.
        case spawn(@Sendable () async -> Void)
        /// A piece of work has finished: handle its result, in order with the rest.
        case then(@Sendable () async -> Void)
    }

    typealias Instant = ContinuousClock.Instant

    struct ParticipantRun {
        var machine: SnapshotParticipant<Instant>
        var plan: SnapshotPlan
        var writers: [String: ImageStreamWriter] = [:]
        /// Memory targets: each VM's uploads to its stores (a store that dies fails them at once).
        var uploaders: [String: ReplicaUploader] = [:]
        /// Memory targets: each VM's stores, in placement order (name and address of their image store).
        var stores: [String: [ReplicaUploader.StoreTarget]] = [:]
        var outcomes: [String: VMCutRunner.Outcome] = [:]
        /// Monotonic time each VM's cut began (for time to durable).
        var cutStarted: [String: Instant] = [:]
        var durabilityStarted = false
        var markersSent = false
        var ended: Instant?
        /// When this peer last told the initiator its VMs' streamed bytes.
        var streamedSentAt: Instant?
        /// Why it was aborted here, once it was.
        var abortReason: String?
        /// The key its images and channel logs are sealed with at rest, fixed when it starts here (a key rotation
        /// under way must not seal one VM's image and its channel log under different keys).
        var sealing: (id: UInt32, bytes: [UInt8])? = nil
    }

    let config: PeerConfig
    let me: PeerID
    let membership: MembershipService
    let switchService: SwitchService
    let supervisor: VMSupervisor
    /// The VMs this peer runs (configured, and adopted from lost peers by restores).
    let hosted: HostedVMs
    let catalog: SnapshotCatalog
    let settings: SnapshotSettings
    /// The keyring as it is now (image streams to stores are sealed with its primary key).
    let keyring: @Sendable () -> Keyring
    let logger: Logger
    /// The initiator's side: the snapshots driven from here, the requests answered, the operation table.
    var initiator: InitiatorDriver<Instant>
    var participants: [UInt64: ParticipantRun] = [:]
    var awaited: [UInt64: SnapshotProgress?] = [:]
    var restores: [UInt64: RestoreRun] = [:]
    /// Restores this peer holds VMs of (steps, answers, what to roll back).
    var holder: RestoreHolder<Instant>
    /// The machines loaded beside running VMs, by restore and VM, until the switch-over or a rollback.
    var stagedMachines: [UInt64: [String: StagedVM]] = [:]
    /// The VMs switched over here, paused until the restore's `resume`, by restore.
    var switchedOver: [UInt64: [String]] = [:]
    var deletions: [UInt64: Set<PeerID>] = [:]
    /// Answers to this peer's asks for an operation (restore, delete), by operation id.
    var awaitedOperations: [UInt64: OperationAnswer?] = [:]
    /// Merges the disk layers of deleted snapshots and removes disk files nothing needs.
    let diskMerger: DiskMerger
    /// When the disk chains were last looked at.
    var lastDiskPass: Instant?
    let inbox: AsyncStream<Event>
    let inboxInput: AsyncStream<Event>.Continuation
    /// When each participant machine asked to be ticked next (its latest `scheduleTick`), by snapshot id.
    var participantTicks: [UInt64: Instant] = [:]
    /// The earliest wake-up already on its way.
    var wakeAt: Instant?
    /// When this peer last looked for snapshots whose initiator was lost.
    var lastTakeoverCheck: Instant?
    /// When this peer last swapped catalogs with another.
    var lastCatalogSync: Instant?
    /// When the service was made (a peer starting up waits a while for the cluster's ownership records).
    let started: Instant = .now
    /// When this peer first heard another's ownership records (a catalog summary) since it started.
    var ownershipHeard: Instant?
    var ownershipWaitLogged = false
    /// The fence, when `fence_after_s` is set.
    var fence: FenceLease<Instant>?
    /// The configured schedules: taken and pruned while this peer is the initiator.
    var schedules: ScheduleRunner
    /// When the schedules were last looked at.
    var lastScheduleRun: Instant?
    /// Each snapshot initiated here: its phase, since when, and when it started (for the metrics).
    var initiatorPhases: [UInt64: (phase: String, since: Instant, started: Instant)] = [:]

    /// How often housekeeping runs (restore retransmissions, streamed bytes, takeovers, sync, leases).
    static let housekeepingInterval = Duration.milliseconds(250)

    /// Creates the service; `run` begins handling what reaches it (messages delivered before are kept).
    public init(
        config: PeerConfig,
        membership: MembershipService,
        switchService: SwitchService,
        supervisor: VMSupervisor,
        hosted: HostedVMs,
        catalog: SnapshotCatalog,
        settings: SnapshotSettings = SnapshotSettings(),
        keyring: (@Sendable () -> Keyring)? = nil,
        logger: Logger
    ) {
        self.keyring = keyring ?? { [config] in config.keyring }
        self.config = config
        self.me = config.peer.id
        self.holder = RestoreHolder(me: config.peer.id)
        self.initiator = InitiatorDriver(me: config.peer.id, myName: config.peer.name)
        self.fence = config.peer.fenceAfter.map { FenceLease(after: $0, now: .now) }
        self.schedules = ScheduleRunner(schedules: config.schedules)
        self.membership = membership
        self.switchService = switchService
        self.supervisor = supervisor
        self.hosted = hosted
        self.catalog = catalog
        self.settings = settings
        self.logger = logger
        self.diskMerger = DiskMerger(layers: DiskLayers(config: config), logger: logger)
        (self.inbox, self.inboxInput) = AsyncStream.makeStream()
    }

    /// Handles the inbox, in order, until graceful shutdown; then cancels the work still running.
    public func run() async throws {
        try await self.switchService.onTrigger { [inboxInput] vm in inboxInput.yield(.triggered(vm)) }
        await withDiscardingTaskGroup { group in
            group.addTask { [inboxInput] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: Self.housekeepingInterval)
                    inboxInput.yield(.housekeeping)
                }
            }
            await withGracefulShutdownHandler {
                for await event in self.inbox {
                    if case .spawn(let work) = event {
                        group.addTask { await work() }
                    } else {
                        await self.handle(event)
                    }
                }
            } onGracefulShutdown: { [inboxInput] in
                inboxInput.finish()
            }
            group.cancelAll()
        }
        self.logger.info("Snapshot service stopped")
    }

    /// A snapshot message from membership (or from this peer to itself).
    public nonisolated func deliver(_ message: SnapshotMessage) {
        self.inboxInput.yield(.message(message))
    }

    /// A member died or left: a snapshot it takes part in cannot complete (before its commit point); one it
    /// initiated is taken over by the next initiator.
    public nonisolated func memberDown(_ name: String) {
        self.inboxInput.yield(.memberDown(name))
    }

    /// Runs `work` in the service's task group, then `then` with its result, in order with the inbox.
    nonisolated func spawn<T: Sendable>(
        _ work: @escaping @Sendable () async -> T,
        then: @escaping @Sendable (T) async -> Void
    ) {
        let input = self.inboxInput
        input.yield(
            .spawn {
                let result = await work()
                input.yield(.then { await then(result) })
            }
        )
    }

    private func handle(_ event: Event) async {
        switch event {
        case .message(let message): await self.receive(message)
        case .triggered(let vm): await self.vmTriggered(vm)
        case .memberDown(let name): await self.handleMemberDown(name)
        case .wake: await self.tickMachines(now: .now)
        case .housekeeping: await self.housekeeping(now: .now)
        case .then(let body): await body()
        case .spawn: break  // started by `run`
        }
    }

    /// Records when a machine asked to be ticked, and makes sure a wake-up comes by then.
    func schedule(_ at: Instant) {
        if let pending = self.wakeAt, pending <= at { return }
        self.wakeAt = at
        let input = self.inboxInput
        input.yield(
            .spawn {
                try? await Task.sleep(until: at, clock: .continuous)
                input.yield(.wake)
            }
        )
    }

    func receive(_ message: SnapshotMessage) async {
        let id = message.key.id
        switch message.body {
        case .request(let mode, let name, let target, let wait):
            await self.serveRequest(message, mode: mode, name: name, target: target, wait: wait)
        case .progress(let progress):
            if self.awaited[id] != nil { self.awaited[id] = progress }
        case .prepare:
            await self.startParticipant(message)
        case .prepared, .cutDone, .durable, .failed, .committed, .aborted, .holding:
            await self.executeInitiator(id, self.initiator.onMessage(message, now: .now))
        case .cut, .commit, .abort, .inquire:
            await self.participantMessage(message)
        case .restore, .restoreAnswer:
            await self.restoreMessage(message)
        case .deleteSnapshot:
            // A restore here still uses it: deleted once that is settled (the initiator refuses such deletes;
            // this covers one asked of an older initiator, or by a peer that could not ask).
            if self.holder.deleteAsked(id) { await self.deleteLocally(id) }
            await self.membership.send(
                snapshot: SnapshotMessage(key: message.key, from: self.me, body: .deleted),
                to: message.from
            )
        case .deleted:
            self.deletions[id]?.remove(message.from)
        case .catalog, .manifestWanted, .manifest:
            await self.catalogMessage(message)
        case .operation(let kind, let snapshot, let wait, let held):
            await self.serveOperation(message, kind: kind, snapshot: snapshot, wait: wait, held: held)
        case .operationAnswer(let answer):
            if self.awaitedOperations[id] != nil { self.awaitedOperations[id] = answer }
        case .operationDone:
            self.initiator.operationDone(id)
        case .owners(let blob):
            await self.ownersMessage(message, blob)
        case .streamed(let counts):
            self.initiator.streamed(id, counts)
        }
    }

    /// Ticks the machines whose scheduled time has come; a machine asks again (`scheduleTick`) when it wants
    /// another tick.
    private func tickMachines(now: Instant) async {
        self.wakeAt = nil
        for (id, directives) in self.initiator.tick(now: now) {
            await self.executeInitiator(id, directives)
        }
        for (id, at) in self.participantTicks where at <= now {
            self.participantTicks[id] = nil
            guard var run = self.participants[id] else { continue }
            let directives = run.machine.onTick(now: now)
            self.participants[id] = run
            await self.executeParticipant(id, directives)
        }
        if let next = self.nextTick { self.schedule(next) }
    }

    /// The earliest tick any machine asked for.
    private var nextTick: Instant? {
        ([self.initiator.nextTick].compactMap { $0 } + self.participantTicks.values).min()
    }

    private func housekeeping(now: Instant) async {
        self.initiator.forget(now: now)
        self.initiatorPhases = self.initiatorPhases.filter { self.initiator.runs[$0.key] != nil }
        for (id, run) in self.participants {
            if let ended = run.ended, ended.duration(to: now) > .seconds(600) {
                self.participants[id] = nil
                self.participantTicks[id] = nil
            }
        }
        for id in Array(self.participants.keys) { await self.reportStreamed(id, now: now) }
        await self.tickRestores(now: now)
        self.expireOperations(now: now)
        await self.observeFence(now: now)
        if self.lastTakeoverCheck.map({ $0.duration(to: now) >= .seconds(1) }) ?? true {
            self.lastTakeoverCheck = now
            await self.takeOverOrphans()
        }
        // Until it has heard the cluster's ownership records, a peer starting up asks every second.
        // (and so does a fenced one that sees a majority again).
        let hurried = self.ownershipHeard == nil || self.fence?.awaitsOwnership == true
        let syncInterval = hurried ? Duration.seconds(1) : Self.catalogSyncInterval
        if self.lastCatalogSync.map({ $0.duration(to: now) >= syncInterval }) ?? true {
            self.lastCatalogSync = now
            await self.syncCatalog()
            await self.sweepEndedSnapshots()
        }
        if self.lastDiskPass.map({ $0.duration(to: now) >= Self.diskPassInterval }) ?? true {
            self.lastDiskPass = now
            await self.startDiskPass()
        }
        if self.lastScheduleRun.map({ $0.duration(to: now) >= Self.scheduleInterval }) ?? true {
            self.lastScheduleRun = now
            await self.runSchedules()
        }
        // A wake-up lost (a machine asked while another was pending and that one found nothing due): not for long.
        if let next = self.nextTick, next <= now {
            await self.tickMachines(now: now)
        }
    }

    /// While this peer's images stream (cut, not yet durable), tells the initiator every `streamedInterval`
    /// how many bytes each VM has written, for `snapshot`'s progress.
    private func reportStreamed(_ id: UInt64, now: Instant) async {
        guard let run = self.participants[id], [.cutting, .cut].contains(run.machine.phase), !run.writers.isEmpty,
            run.streamedSentAt.map({ $0.duration(to: now) >= Self.streamedInterval }) ?? true
        else { return }
        self.participants[id]?.streamedSentAt = now
        let counts = run.writers.sorted { $0.key < $1.key }.map { vm, writer in
            let progress = writer.progress
            return VMStreamedBytes(vm: vm, rawBytes: progress.rawBytes, storedBytes: progress.storedBytes)
        }
        // A few VMs per message keeps each within one datagram.
        for start in stride(from: 0, to: counts.count, by: 16) {
            let message = SnapshotMessage(
                key: run.machine.key,
                from: self.me,
                body: .streamed(Array(counts[start..<min(start + 16, counts.count)]))
            )
            await self.membership.send(snapshot: message, to: run.machine.initiator)
        }
    }

    /// How often a participant reports its streamed bytes.
    static let streamedInterval = Duration.milliseconds(250)

    /// The monitor of a running local VM.
    func monitor(_ vm: String) async -> QMPClient? {
        guard let machine = await self.supervisor.machine(vm) else { return nil }
        return await machine.monitor
    }

    /// The cipher sealing (and opening) the chunks of `kind` of `vm` in snapshot `id` at rest, under the keyring as
    /// it is now: new chunks with its primary key, old ones with any key still in it.
    ///
    /// A participant seals with the key fixed when the snapshot started here; `requireSealed` refuses chunks written
    /// unsealed (a snapshot whose manifest says they were sealed).
    func chunkCipher(_ id: UInt64, vm: String, kind: ImageKind, requireSealed: Bool = true) -> ChunkCipher {
        let keys = AtRestKeys(keyring: self.keyring(), clusterName: self.config.cluster.name)
        return ChunkCipher(
            snapshot: id,
            vm: vm,
            kind: kind,
            sealing: self.participants[id]?.sealing ?? keys.sealing(snapshot: id),
            opening: keys.opening(snapshot: id),
            requireSealed: requireSealed
        )
    }

    /// Where snapshot `id`'s local files live.
    func directory(_ id: UInt64) -> String {
        "\(self.config.peer.dataDirectory)/snapshots/\(id)"
    }

    static func wallNanoseconds() -> UInt64 {
        UInt64(Date().timeIntervalSince1970 * 1_000_000_000)
    }
}
