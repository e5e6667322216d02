/// A participant's side of one snapshot (DESIGN §6): prepares when asked, cuts its VMs on the marker or
/// earlier when the switch sees a frame of the new epoch (trigger), streams, then commits or aborts as told.
///
/// Pure: messages, local results and ticks come in with the time; directives go out. Every request is
/// answered idempotently, so the initiator's retransmissions and duplicates are harmless; `durable` is
/// resent until the initiator answers with `commit` or `abort`.
public struct SnapshotParticipant<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// Where the snapshot stands here.
    public enum Phase: Sendable, Hashable {
        case preparing, prepared, failed, cutting, cut, durable, committed, aborted
    }

    /// What the shell must do.
    public enum Directive: Sendable, Hashable {
        /// Send `message` to the initiator.
        case send(SnapshotMessage, to: PeerID)
        /// Open image streams and arm the switch for these local VMs; then call `localPrepared`.
        case prepareLocal([String])
        /// Cut these VMs now (each reported back with `vmCut`).
        case cutVMs([String])
        /// The snapshot is committed: mark it so in the local catalog, with the initiator's manifest.
        case commitLocal([UInt8])
        /// Discard partial images, disarm the switch, leave every VM running.
        case abortLocal(SnapshotAbortReason)
        /// A trigger this phase does not act on: end the gate's cut (`EpochGate.cancelCut`) and release.
        case declineTrigger(String)
        /// Call `onTick` at this time.
        case scheduleTick(at: Instant)
    }

    /// Which snapshot.
    public let key: SnapshotKey
    /// This peer.
    public let me: PeerID
    /// The initiator: the one that prepared the snapshot, or the one of the highest term that took it over.
    public private(set) var initiator: PeerID
    /// The term of the initiator that took the snapshot over, if one did (its predecessors are fenced).
    public private(set) var takeoverTerm: UInt64?
    /// This peer's VMs in the plan.
    public let vms: [String]
    /// Timing.
    public let settings: SnapshotSettings
    /// The current phase.
    public private(set) var phase: Phase
    /// Cuts done so far, by VM.
    public private(set) var reports: [String: VMCutReport] = [:]
    var requested: Set<String> = []
    var triggered: Set<String> = []
    var failure: String?
    var nextResend: Instant?
    var durablePending = false
    var durableReport: [UInt8] = []
    var lastHeard: Instant?
    /// The participants running VMs, as the marker said (a new initiator taking over needs them).
    public private(set) var holders: Set<PeerID>?
    /// The manifest, once committed (a new initiator may ask for it).
    var manifest: [UInt8] = []

    /// Whether a message under `key` may be acted on, given the highest election term this peer has seen
    /// (fencing: an initiator of an older term has been superseded).
    public static func admits(_ key: SnapshotKey, highestTerm: UInt64) -> Bool {
        key.term >= highestTerm
    }

    /// Starts from the initiator's `prepare`.
    public init(prepare message: SnapshotMessage, me: PeerID, settings: SnapshotSettings = SnapshotSettings()) {
        guard case .prepare(let plan) = message.body else {
            preconditionFailure("a participant starts from a prepare, not \(message.body)")
        }
        self.key = message.key
        self.me = me
        self.initiator = message.from
        // A VM named twice in a plan would never count as all cut.
        var seen: Set<String> = []
        self.vms = (plan.vms[me] ?? []).filter { seen.insert($0).inserted }
        self.settings = settings
        self.phase = .preparing
    }

    /// The first directive: prepare locally.
    public func start() -> [Directive] {
        [.prepareLocal(self.vms)]
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Events

    /// A request from the initiator; anything about another snapshot, or from another peer, is ignored.
    public mutating func onMessage(_ message: SnapshotMessage, now: Instant) -> [Directive] {
        var directives: [Directive] = []
        if message.key == self.key, case .inquire(let term) = message.body {
            return self.onInquire(from: message.from, term: term, now: now)
        }
        guard message.key == self.key, message.from == self.initiator else { return directives }
        self.lastHeard = now
        switch (message.body, self.phase) {
        case (.prepare, .prepared), (.prepare, .cutting), (.prepare, .cut), (.prepare, .durable):
            directives.append(self.reply(.prepared(ok: true, reason: nil, holds: !self.vms.isEmpty)))
        case (.prepare, .failed):
            directives.append(self.reply(.prepared(ok: false, reason: self.failure, holds: !self.vms.isEmpty)))
        case (.cut, .failed):
            // A cut that failed is reported again each time the marker is resent (the report may be lost).
            directives.append(self.reply(.failed(self.failure ?? "cut failed")))
        case (.cut(let holders), .prepared):
            self.holders = holders
            self.phase = .cutting
            directives += self.cutRemaining()
        case (.cut, .cut), (.cut, .durable):
            directives.append(self.reply(.cutDone(self.sortedReports)))
        case (.commit(let manifest), .durable):
            self.phase = .committed
            self.manifest = manifest
            self.nextResend = nil
            directives.append(.commitLocal(manifest))
            directives.append(self.reply(.committed))
        case (.commit, .committed):
            directives.append(self.reply(.committed))
        case (.commit(let manifest), .prepared), (.commit(let manifest), .cutting), (.commit(let manifest), .cut):
            // A participant without VMs has nothing to make durable: a new initiator may commit without its
            // marker (the takeover needs only the holders), and it must not abort on its own afterwards.
            guard self.vms.isEmpty else { break }
            self.phase = .committed
            self.manifest = manifest
            self.nextResend = nil
            directives.append(.commitLocal(manifest))
            directives.append(self.reply(.committed))
        case (.abort(let reason), let phase) where phase != .committed && phase != .aborted:
            self.phase = .aborted
            self.nextResend = nil
            directives.append(.abortLocal(reason))
            directives.append(self.reply(.aborted))
        case (.abort, .aborted):
            directives.append(self.reply(.aborted))
        default:
            break  // duplicates, and requests this phase has nothing to say to (the initiator retransmits)
        }
        return directives
    }

    /// What this peer holds for the snapshot, as a new initiator asks it.
    public var holding: SnapshotRecovery.Holding {
        switch self.phase {
        case .durable: .durable(cuts: self.sortedReports, report: self.durableReport)
        case .committed: .committed(manifest: self.manifest)
        case .aborted: .aborted
        // It has the marker: its cuts and streams finish without more word.
        case .cutting, .cut: .streaming
        case .preparing, .prepared, .failed: .unfinished
        }
    }

    /// A new initiator asks what this peer holds: one of a higher term than any before becomes the initiator
    /// (outcomes from the others are ignored from now on); an inquiry of a lower term is fenced.
    private mutating func onInquire(from peer: PeerID, term: UInt64, now: Instant) -> [Directive] {
        let current = self.takeoverTerm ?? self.key.term
        if term > current {
            self.initiator = peer
            self.takeoverTerm = term
        } else if term != current || peer != self.initiator {
            return []
        }
        self.lastHeard = now
        return [self.reply(.holding(self.holding))]
    }

    /// Local preparation finished (image streams open, switch armed), or failed.
    public mutating func localPrepared(ok: Bool, reason: String? = nil, now: Instant) -> [Directive] {
        precondition(self.phase == .preparing || self.phase == .aborted, "localPrepared in phase \(self.phase)")
        guard self.phase == .preparing else { return [] }
        self.phase = ok ? .prepared : .failed
        self.failure = ok ? nil : reason
        self.lastHeard = now
        var directives = [self.reply(.prepared(ok: ok, reason: self.failure, holds: !self.vms.isEmpty))]
        if ok { directives.append(.scheduleTick(at: now.advanced(by: self.settings.participantSilence))) }
        return directives
    }

    /// The switch saw a frame of the new epoch for `vm` before the marker: cut it now (Lai–Yang trigger).
    public mutating func vmTriggered(_ vm: String, now: Instant) -> [Directive] {
        if self.reports[vm] != nil || self.requested.contains(vm) { return [] }  // its cut is under way
        guard self.phase == .prepared || self.phase == .cutting, self.vms.contains(vm) else {
            return [.declineTrigger(vm)]
        }
        self.requested.insert(vm)
        self.triggered.insert(vm)
        return [.cutVMs([vm])]
    }

    /// One VM's cut is done.
    public mutating func vmCut(_ report: VMCutReport, now: Instant) -> [Directive] {
        guard self.vms.contains(report.vm), self.reports[report.vm] == nil else { return [] }
        var report = report
        report.triggered = self.triggered.contains(report.vm)
        self.reports[report.vm] = report
        return self.finishCutIfDone()
    }

    /// A VM's cut failed (the VM runs on in the old epoch): the snapshot cannot complete.
    public mutating func vmCutFailed(_ vm: String, reason: String, now: Instant) -> [Directive] {
        guard self.phase == .prepared || self.phase == .cutting else { return [] }
        return self.localFailed(reason, now: now)
    }

    /// Something local failed after preparing (an image stream, the disk): the snapshot cannot complete. The
    /// failure is resent until the initiator aborts.
    public mutating func localFailed(_ reason: String, now: Instant) -> [Directive] {
        guard [.prepared, .cutting, .cut].contains(self.phase) else { return [] }
        self.phase = .failed
        self.failure = reason
        self.nextResend = now.advanced(by: self.settings.retransmitInterval)
        return [self.reply(.failed(reason)), .scheduleTick(at: self.nextResend!)]  // !-safe, just set
    }

    /// Every local image is durable; `report` goes to the initiator for the manifest.
    public mutating func imagesDurable(report: [UInt8] = [], now: Instant) -> [Directive] {
        self.durableReport = report
        if self.phase == .prepared {
            // Every VM was cut by triggers and streamed before the marker came: say so once it does.
            self.durablePending = true
            return []
        }
        guard self.phase == .cut else { return [] }
        self.phase = .durable
        self.nextResend = now.advanced(by: self.settings.retransmitInterval)
        return [self.reply(.durable(report)), .scheduleTick(at: self.nextResend!)]  // !-safe, just set
    }

    /// Resends `durable` until the outcome arrives; gives up (aborting here) if the initiator falls silent
    /// before this peer is durable.
    public mutating func onTick(now: Instant) -> [Directive] {
        if self.phase == .prepared || self.phase == .cutting, let heard = self.lastHeard {
            let limit = heard.advanced(by: self.settings.participantSilence)
            guard now >= limit else { return [.scheduleTick(at: limit)] }
            let reason = SnapshotAbortReason(
                "no word from the initiator \(self.initiator) for \(self.settings.participantSilence)"
            )
            self.phase = .aborted
            return [.abortLocal(reason), self.reply(.failed(reason.message))]
        }
        guard self.phase == .durable || self.phase == .failed, let resend = self.nextResend else { return [] }
        guard now >= resend else { return [.scheduleTick(at: resend)] }
        self.nextResend = now.advanced(by: self.settings.retransmitInterval)
        let body: SnapshotMessage.Body =
            self.phase == .durable ? .durable(self.durableReport) : .failed(self.failure ?? "failed")
        return [self.reply(body), .scheduleTick(at: self.nextResend!)]  // !-safe, just set
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Helpers

    private mutating func cutRemaining() -> [Directive] {
        let remaining = self.vms.filter { self.reports[$0] == nil && !self.requested.contains($0) }
        self.requested.formUnion(remaining)
        var directives: [Directive] = remaining.isEmpty ? [] : [.cutVMs(remaining)]
        directives += self.finishCutIfDone()
        return directives
    }

    private mutating func finishCutIfDone() -> [Directive] {
        guard self.phase == .cutting, self.reports.count == self.vms.count else { return [] }
        self.phase = .cut
        var directives = [self.reply(.cutDone(self.sortedReports))]
        if self.durablePending {
            self.durablePending = false
            // !-safe, set by every message and prepare
            directives += self.imagesDurable(report: self.durableReport, now: self.lastHeard!)
        }
        return directives
    }

    private var sortedReports: [VMCutReport] {
        self.reports.values.sorted { $0.vm < $1.vm }
    }

    private func reply(_ body: SnapshotMessage.Body) -> Directive {
        .send(SnapshotMessage(key: self.key, from: self.me, body: body), to: self.initiator)
    }
}
