/// What a new initiator does with a snapshot its predecessor left unfinished (DESIGN §6, failover).
///
/// The new initiator (a higher term) asks every participant of the snapshot's plan what it holds for it and
/// decides from the answers alone, so any initiator decides the same: a snapshot some participant saw
/// committed is committed everywhere (its manifest is passed on as it was written); one every participant
/// holding VMs made durable is committed with a manifest built anew from their reports; anything less is
/// aborted everywhere, so `list` never shows a snapshot that cannot be restored.
public enum SnapshotRecovery {
    /// What one participant holds for the snapshot.
    public enum Holding: Sendable, Hashable, Codable {
        /// Nothing: never prepared, or already cleaned up.
        case nothing
        /// Prepared or cutting: not every VM is cut (nobody will send the marker now).
        case unfinished
        /// Every VM is cut and its images are still streaming: durable soon, worth waiting for.
        case streaming
        /// Its images are durable: its cut reports and its durable report (the shell's per-VM summaries).
        case durable(cuts: [VMCutReport], report: [UInt8])
        /// It got the commit: the manifest as the initiator wrote it.
        case committed(manifest: [UInt8])
        /// It aborted the snapshot.
        case aborted
    }

    /// The new initiator's decision.
    public enum Decision: Sendable, Hashable {
        /// Commit with the manifest a participant already has (the commit point was passed).
        case commit(manifest: [UInt8])
        /// Build the manifest from every participant's durable report and cuts, then commit.
        case build(cuts: [PeerID: [VMCutReport]], reports: [PeerID: [UInt8]])
        /// Abort everywhere, for this reason.
        case abort(String)
        /// Not every alive participant has answered yet, or some still stream: ask them again (the shell aborts
        /// once its deadline passes).
        case wait(missing: Set<PeerID>)
    }

    /// Decides from `answers` (by participant) for `plan`; `holders` are the participants running VMs (by
    /// default those with VMs in the plan); `alive` are the members the new initiator sees. `names` only make the
    /// reasons readable.
    public static func decide(
        plan: SnapshotPlan,
        holders: Set<PeerID>? = nil,
        answers: [PeerID: Holding],
        alive: Set<PeerID>,
        names: [PeerID: String] = [:]
    ) -> Decision {
        let name = { (peer: PeerID) in names[peer] ?? "\(peer)" }
        // Someone saw the commit: the snapshot exists; finish telling everyone.
        for peer in answers.keys.sorted() {
            if case .committed(let manifest) = answers[peer] { return .commit(manifest: manifest) }
        }
        for peer in answers.keys.sorted() where answers[peer] == .aborted {
            return .abort("participant \(name(peer)) had already aborted it")
        }
        // Every alive participant answers first, VMs or not: one may have seen the commit (a lost holder then
        // changes nothing: the snapshot exists) or the abort.
        let missing = Set(plan.participants.filter { alive.contains($0) && answers[$0] == nil })
        if !missing.isEmpty { return .wait(missing: missing) }
        // Only participants holding VMs carry images; the others just closed their channels.
        let holders = (holders ?? Set(plan.vms.filter { !$0.value.isEmpty }.keys)).sorted()
        if let gone = holders.first(where: { !alive.contains($0) }) {
            return .abort("participant \(name(gone)) is gone, and whether its images are durable is unknown")
        }
        // Holders still streaming are waited for, unless another holder already makes the snapshot impossible.
        let streaming = Set(holders.filter { answers[$0] == .streaming })
        let stuck = holders.first { peer in
            if case .durable = answers[peer] { return false }
            return answers[peer] != .streaming
        }
        if let stuck { return .abort("the initiator failed before participant \(name(stuck))'s images were durable") }
        if !streaming.isEmpty { return .wait(missing: streaming) }
        var cuts: [PeerID: [VMCutReport]] = [:]
        var reports: [PeerID: [UInt8]] = [:]
        for peer in holders {
            guard case .durable(let peerCuts, let report) = answers[peer] else {
                return .abort("the initiator failed before participant \(name(peer))'s images were durable")
            }
            cuts[peer] = peerCuts
            reports[peer] = report
        }
        guard !holders.isEmpty else { return .abort("the plan has no VM") }
        return .build(cuts: cuts, reports: reports)
    }
}
