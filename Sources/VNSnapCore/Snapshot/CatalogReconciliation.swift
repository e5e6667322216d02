/// What catalog sync exchanges: a peer's snapshot ids by state.
public struct CatalogSummary: Sendable, Hashable, Codable {
    /// Committed snapshots.
    public var committed: [UInt64]
    /// Deleted snapshots (tombstones).
    public var deleted: [UInt64]
    /// Aborted snapshots.
    public var aborted: [UInt64]
    /// The VMs' ownership records (issue 14); absent from older peers.
    public var owners: [VMOwnership]?

    /// Creates a summary.
    public init(committed: [UInt64], deleted: [UInt64], aborted: [UInt64], owners: [VMOwnership]? = nil) {
        self.committed = committed
        self.deleted = deleted
        self.aborted = aborted
        self.owners = owners
    }
}

/// Catalog sync's decisions (DESIGN §7): what a peer does with another peer's summary, given its own catalog.
///
/// A deletion wins over a commit (the operator deleted it); a commit wins over an abort (only a superseded
/// initiator's abort can reach a peer once a successor committed, and a commit needed every holder's images
/// durable); a snapshot still under way here is left to the protocol. Pure: the catalog's states and the
/// generator are parameters.
public struct CatalogReconciliation: Sendable, Hashable {
    /// Snapshots to delete here (deleted elsewhere while this peer was away).
    public var delete: [UInt64] = []
    /// Snapshots pending here to abort (aborted elsewhere).
    public var abort: [UInt64] = []
    /// Snapshots committed here that another peer aborted: kept (it will learn the commit); worth a warning.
    public var keptCommitted: [UInt64] = []
    /// Committed elsewhere, unknown, pending or aborted here: their manifests to ask for (at most `limit`).
    public var wanted: [UInt64] = []

    /// Decides what to do with `theirs`; `mine` maps each id in this peer's catalog to its state, `running` are
    /// the snapshots still under way here, `limit` the manifests asked per round (picked at random, so ids that
    /// never arrive do not hold the others up).
    public static func reconcile<R: RandomNumberGenerator>(
        _ theirs: CatalogSummary,
        mine: [UInt64: String],
        running: Set<UInt64>,
        limit: Int,
        using generator: inout R
    ) -> CatalogReconciliation {
        var result = CatalogReconciliation()
        result.delete = theirs.deleted.filter { mine[$0] != "deleted" && !running.contains($0) }
        for id in theirs.aborted where !running.contains(id) {
            switch mine[id] {
            case "pending"?: result.abort.append(id)
            case "committed"?: result.keptCommitted.append(id)
            default: break
            }
        }
        let deleted = Set(result.delete)
        let wanted = theirs.committed.filter {
            (mine[$0] == nil || mine[$0] == "pending" || mine[$0] == "aborted") && !running.contains($0)
                && !deleted.contains($0)
        }
        result.wanted = Array(wanted.shuffled(using: &generator).prefix(limit))
        return result
    }
}
