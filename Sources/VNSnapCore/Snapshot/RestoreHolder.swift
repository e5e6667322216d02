/// A holder's side of restores (DESIGN §7, issue 13): which step of which restore runs here, what each step
/// answered (a repeated request gets the same answer), which VMs were loaded beside their running copies and which
/// running ones were paused — so that a rollback undoes exactly those — and which deletions wait for a restore to
/// settle.
///
/// Pure: the shell carries out `carryOut` (one step on the real VMs) and `rollBack` (stop the staged machines,
/// resume the paused VMs) and reports back with `stepFinished` and `rolledBack`; time is a parameter. A holder
/// whose restorer falls silent with VMs paused (or staged) rolls back on its own (`onTick`); one whose restorer
/// falls silent after the switch-over resumes the VMs switched over on its own.
public struct RestoreHolder<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// What the shell must do.
    public enum Action: Sendable, Hashable {
        /// Send `message` (a step's answer) to the restorer.
        case send(SnapshotMessage, to: PeerID)
        /// Carry out `step` of restore `run` on this peer's VMs of the snapshot, then call `stepFinished`.
        case carryOut(run: UInt64, step: RestoreStep)
        /// Undo restore `run` here: stop the machines loaded for `discard`, resume the VMs in `resume`; then call
        /// `rolledBack`.
        case rollBack(run: UInt64, discard: [String], resume: [String])
        /// Delete these snapshots now: their deletion waited for a restore that has settled.
        case delete([UInt64])
    }

    struct Run: Sendable {
        /// The snapshot restored (its key, as the restorer sent it).
        var key: SnapshotKey
        var restorer: PeerID?
        var answers: [RestoreStep: SnapshotMessage.Body] = [:]
        var running: Set<RestoreStep> = []
        /// VMs loaded beside their running copies, until the switch-over or a rollback.
        var staged: Set<String> = []
        /// Running VMs paused, until the switch-over or a rollback.
        var paused: [String] = []
        var switchedOver = false
        var rolledBack = false
        /// A rollback asked while a step still ran: started when it ends.
        var rollbackWaiting = false
        var heard: Instant
        var started: Instant

        /// Switched over, the new VMs still paused: `resume` has not ended here.
        var resumePending: Bool { self.switchedOver && self.answers[.resume] == nil }

        /// Whether VMs are loaded or paused for it, or a step of it runs.
        var unsettled: Bool {
            !self.running.isEmpty || !self.staged.isEmpty || !self.paused.isEmpty || self.resumePending
        }
    }

    /// This peer.
    public let me: PeerID
    var runs: [UInt64: Run] = [:]
    var deferredDeletes: Set<UInt64> = []
    /// How long a restorer may be silent while VMs are paused here before this holder rolls back.
    let pausedSilence: Duration
    /// The same while VMs are only loaded beside the running ones.
    let stagedSilence: Duration

    /// An empty table for peer `me`.
    public init(me: PeerID, pausedSilence: Duration = .seconds(20), stagedSilence: Duration = .seconds(120)) {
        self.me = me
        self.pausedSilence = pausedSilence
        self.stagedSilence = stagedSilence
    }

    /// Whether a restore of snapshot `id` is under way here (its images may not go yet).
    public func inUse(_ snapshot: UInt64) -> Bool {
        self.runs.values.contains { $0.key.id == snapshot && $0.unsettled && !$0.rolledBack }
    }

    /// Whether no restore has VMs loaded or paused here, or a step running.
    public var isSettled: Bool {
        !self.runs.values.contains { $0.unsettled }
    }

    /// The key of the snapshot restore `run` restores, once asked.
    public func key(of run: UInt64) -> SnapshotKey? {
        self.runs[run]?.key
    }

    /// The VMs loaded for restore `run` and not yet switched over or rolled back.
    public func staged(_ run: UInt64) -> Set<String> {
        self.runs[run]?.staged ?? []
    }

    /// A step asked by the restorer (or asked again) in `message` (`key` the snapshot's).
    public mutating func onRequest(
        run id: UInt64,
        step: RestoreStep,
        key: SnapshotKey,
        from restorer: PeerID,
        now: Instant
    )
        -> [Action]
    {
        var run = self.runs[id] ?? Run(key: key, heard: now, started: now)
        run.heard = now
        run.restorer = restorer
        defer { self.runs[id] = run }
        if let answer = run.answers[step] { return [self.answer(answer, run)] }
        // A resume waits for this holder's own switch-over (the restorer asks again).
        guard !run.running.contains(step), step != .resume || !run.running.contains(.switchOver) else { return [] }
        if step == .rollback {
            run.rolledBack = true
            guard run.running.isEmpty else {
                run.rollbackWaiting = true
                return []
            }
            run.running.insert(.rollback)
            return [.rollBack(run: id, discard: run.staged.sorted(), resume: run.paused)]
        }
        guard !run.rolledBack else {
            let refusal = SnapshotMessage.Body.restoreAnswer(
                run: id,
                step: step,
                ok: false,
                reason: "restore \(id) was rolled back here",
                blob: []
            )
            run.answers[step] = refusal
            return [self.answer(refusal, run)]
        }
        run.running.insert(step)
        return [.carryOut(run: id, step: step)]
    }

    /// A step has ended here with `body` (its answer); `staged` and `paused` name the VMs it loaded or paused.
    public mutating func stepFinished(
        run id: UInt64,
        step: RestoreStep,
        body: SnapshotMessage.Body,
        staged: [String] = [],
        paused: [String] = [],
        now: Instant
    ) -> [Action] {
        guard var run = self.runs[id] else { return [] }
        run.running.remove(step)
        run.answers[step] = body
        run.staged.formUnion(staged)
        run.paused += paused
        if step == .switchOver {
            // The switch-over began: nothing is left to undo (a VM it could not switch over went back to running
            // as it was, there and then); what did switch over waits, paused, for `resume`.
            run.switchedOver = true
            run.staged = []
            run.paused = []
        }
        var actions: [Action] = run.restorer == nil ? [] : [self.answer(body, run)]
        if run.rollbackWaiting, run.running.isEmpty {
            run.rollbackWaiting = false
            run.running.insert(.rollback)
            actions.append(.rollBack(run: id, discard: run.staged.sorted(), resume: run.paused))
        }
        self.runs[id] = run
        return actions + self.settle()
    }

    /// The rollback of `run` has ended; `problems` are the VMs that could not be put back (empty: all were).
    public mutating func rolledBack(run id: UInt64, problems: [String], now: Instant) -> [Action] {
        guard var run = self.runs[id] else { return [] }
        run.running.remove(.rollback)
        run.staged = []
        run.paused = []
        let body = SnapshotMessage.Body.restoreAnswer(
            run: id,
            step: .rollback,
            ok: problems.isEmpty,
            reason: problems.joined(separator: "; "),
            blob: []
        )
        run.answers[.rollback] = body
        self.runs[id] = run
        // An answer only to a rollback the restorer asked for; one of this holder's own is kept for when it asks.
        return (run.restorer == nil ? [] : [self.answer(body, run)]) + self.settle()
    }

    /// A deletion of `snapshot` asked here: `true` to delete now, `false` when a restore here uses it (it is
    /// deleted once that has settled).
    public mutating func deleteAsked(_ snapshot: UInt64) -> Bool {
        guard self.inUse(snapshot) else { return true }
        self.deferredDeletes.insert(snapshot)
        return false
    }

    /// Rolls back restores whose restorer fell silent with VMs paused or loaded here, resumes those it fell silent on
    /// after the switch-over; forgets settled restores after an hour.
    public mutating func onTick(now: Instant) -> [Action] {
        var actions: [Action] = []
        for (id, run) in self.runs.sorted(by: { $0.key < $1.key }) {
            if !run.unsettled, run.started.advanced(by: .seconds(3600)) <= now {
                self.runs[id] = nil
                continue
            }
            if run.resumePending, run.running.isEmpty, run.heard.advanced(by: self.pausedSilence) <= now {
                // Past the switch-over there is nothing to roll back to: the VMs switched over here run.
                self.runs[id]?.running.insert(.resume)
                self.runs[id]?.restorer = nil
                actions.append(.carryOut(run: id, step: .resume))
                continue
            }
            guard run.running.isEmpty, !run.switchedOver, !run.staged.isEmpty || !run.paused.isEmpty else { continue }
            let limit = run.paused.isEmpty ? self.stagedSilence : self.pausedSilence
            guard run.heard.advanced(by: limit) <= now else { continue }
            self.runs[id]?.rolledBack = true
            self.runs[id]?.running.insert(.rollback)
            // Its answer waits for a restorer that may yet ask.
            self.runs[id]?.restorer = nil
            actions.append(.rollBack(run: id, discard: run.staged.sorted(), resume: run.paused))
        }
        return actions
    }

    private func answer(_ body: SnapshotMessage.Body, _ run: Run) -> Action {
        // !-safe: called only for a run with a restorer.
        .send(SnapshotMessage(key: run.key, from: self.me, body: body), to: run.restorer!)
    }

    /// Deletions that waited and may now go.
    private mutating func settle() -> [Action] {
        let ready = self.deferredDeletes.filter { !self.inUse($0) }.sorted()
        guard !ready.isEmpty else { return [] }
        self.deferredDeletes.subtract(ready)
        return [.delete(ready)]
    }
}
