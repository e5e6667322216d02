import Foundation
import Logging
import NIOCore
import VNSnapCore
import VNSnapCrypto
import VNSnapHypervisor
import VNSnapImage

/// The snapshot protocol's shell on one peer (DESIGN §6): runs the initiator's side when this peer is the
/// initiator, the participant's side for its own VMs, and the requester's side for `vnsnap-peer snapshot`.
///
/// The protocol itself is in `SnapshotInitiator` and `SnapshotParticipant`; this actor carries out their
/// directives with membership (messages), the switch (epochs), QMP (cuts) and the image writers, and ticks them
/// every `tickInterval`.
public actor SnapshotService {
    typealias Instant = ContinuousClock.Instant

    struct InitiatorRun {
        var machine: SnapshotInitiator<Instant>
        var name: String
        var requestID: UInt64
        var requester: PeerID
        var finished: Instant?
        /// The last bytes written per VM, as participants report them while streaming.
        var streamed: [String: VMStreamedBytes] = [:]
        /// Another peer became initiator before this run's commit point: it is no longer driven from here.
        var superseded = false
    }

    struct ParticipantRun {
        var machine: SnapshotParticipant<Instant>
        var plan: SnapshotPlan
        var writers: [String: ImageStreamWriter] = [:]
        /// Memory targets: each VM's stores, in placement order (name and address of their image store).
        var stores: [String: [(name: String, address: SocketAddress)]] = [:]
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
    }

    /// What the initiator remembers of a request, to answer the requester's polls.
    struct ServedRequest {
        var snapshotID: UInt64
        var progress: SnapshotProgress
        var at: Instant
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
    var initiators: [UInt64: InitiatorRun] = [:]
    var participants: [UInt64: ParticipantRun] = [:]
    var served: [UInt64: ServedRequest] = [:]
    var awaited: [UInt64: SnapshotProgress?] = [:]
    var restores: [UInt64: RestoreRun] = [:]
    var holding: [UInt64: HolderRestore] = [:]
    var deletions: [UInt64: Set<PeerID>] = [:]
    /// Deletions asked while a restore here used their snapshot, done when it is settled.
    var deferredDeletes: Set<UInt64> = []
    /// While this peer is the initiator: the operations on each VIOLIN (one at a time, queued, pins), for the
    /// term it was made in.
    var operations: (term: UInt64, table: ViolinOperations<Instant>)?
    /// Answers to this peer's asks for an operation (restore, delete), by operation id.
    var awaitedOperations: [UInt64: OperationAnswer?] = [:]
    /// Frozen disk images already hashed, by path (they are read-only once frozen).
    var frozenDigests: [String: SnapshotManifest.DiskLayer] = [:]
    private var ticker: Task<Void, Never>?
    /// When this peer last looked for snapshots whose initiator was lost.
    var lastTakeoverCheck: Instant?
    /// When this peer last swapped catalogs with another.
    var lastCatalogSync: Instant?

    /// How often the protocol machines are ticked (retransmissions, deadlines).
    static let tickInterval = Duration.milliseconds(50)

    /// Creates the service; `start` begins ticking.
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
        self.membership = membership
        self.switchService = switchService
        self.supervisor = supervisor
        self.hosted = hosted
        self.catalog = catalog
        self.settings = settings
        self.logger = logger
    }

    /// Starts ticking; the switch's triggers come here.
    public func start() async throws {
        try await self.switchService.onTrigger { [weak self] vm in
            guard let self else { return }
            Task { await self.vmTriggered(vm) }
        }
        self.ticker = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: Self.tickInterval)
                await self?.tick()
            }
        }
    }

    /// Stops ticking.
    public func stop() {
        self.ticker?.cancel()
    }

    /// A snapshot message from membership (or from this peer to itself).
    public nonisolated func deliver(_ message: SnapshotMessage) {
        Task { await self.receive(message) }
    }

    func receive(_ message: SnapshotMessage) async {
        let id = message.key.id
        switch message.body {
        case .request(let mode, let name, let target):
            await self.serveRequest(message, mode: mode, name: name, target: target)
        case .progress(let progress):
            if self.awaited[id] != nil { self.awaited[id] = progress }
        case .prepare:
            await self.startParticipant(message)
        case .prepared, .cutDone, .durable, .failed, .committed, .aborted, .holding:
            guard var run = self.initiators[id], !run.superseded else { return }
            let directives = run.machine.onMessage(message, now: .now)
            self.initiators[id] = run
            await self.executeInitiator(id, directives)
        case .cut, .commit, .abort, .inquire:
            await self.participantMessage(message)
        case .restore, .restoreAnswer:
            await self.restoreMessage(message)
        case .deleteSnapshot:
            // A restore here still uses it: deleted once that is settled (the initiator refuses such deletes;
            // this covers one asked of an older initiator, or by a peer that could not ask).
            if self.restoreInUse(id) {
                self.deferredDeletes.insert(id)
            } else {
                await self.deleteLocally(id)
            }
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
            self.operations?.table.release(id)
        case .streamed(let counts):
            guard self.initiators[id] != nil else { return }
            for count in counts { self.initiators[id]?.streamed[count.vm] = count }
            self.updateProgress(id)
        }
    }

    private func tick() async {
        let now = ContinuousClock.now
        for id in Array(self.initiators.keys) {
            guard var run = self.initiators[id] else { continue }
            if let finished = run.finished, finished.duration(to: now) > .seconds(600) {
                self.initiators[id] = nil
                continue
            }
            guard !run.superseded else { continue }
            let directives = run.machine.onTick(now: now)
            self.initiators[id] = run
            await self.executeInitiator(id, directives)
        }
        for id in Array(self.participants.keys) {
            guard var run = self.participants[id] else { continue }
            if let ended = run.ended, ended.duration(to: now) > .seconds(600) {
                self.participants[id] = nil
                continue
            }
            let directives = run.machine.onTick(now: now)
            self.participants[id] = run
            await self.executeParticipant(id, directives)
            await self.reportStreamed(id, now: now)
        }
        await self.tickRestores(now: now)
        self.expireOperations(now: now)
        if self.lastTakeoverCheck.map({ $0.duration(to: now) >= .seconds(1) }) ?? true {
            self.lastTakeoverCheck = now
            await self.takeOverOrphans()
        }
        if self.lastCatalogSync.map({ $0.duration(to: now) >= Self.catalogSyncInterval }) ?? true {
            self.lastCatalogSync = now
            await self.syncCatalog()
        }
        for (id, request) in self.served where request.at.duration(to: now) > .seconds(3600) {
            self.served[id] = nil
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

    /// Where snapshot `id`'s local files live.
    func directory(_ id: UInt64) -> String {
        "\(self.config.peer.dataDirectory)/snapshots/\(id)"
    }

    static func wallNanoseconds() -> UInt64 {
        UInt64(Date().timeIntervalSince1970 * 1_000_000_000)
    }
}
