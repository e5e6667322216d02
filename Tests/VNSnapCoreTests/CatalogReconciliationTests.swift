import Testing
import VNSnapCore

/// Catalog sync's decisions: a deletion wins over a commit, a commit over an abort, snapshots under way are
/// left to the protocol, and manifests are asked a few at a time.
@Suite struct CatalogReconciliationTests {
    func reconcile(
        _ theirs: CatalogSummary,
        mine: [UInt64: String],
        running: Set<UInt64> = [],
        limit: Int = 16
    ) -> CatalogReconciliation {
        var generator = SeededGenerator(seed: 7)
        return CatalogReconciliation.reconcile(theirs, mine: mine, running: running, limit: limit, using: &generator)
    }

    @Test func test_aDeletionMissedWhileAway_isApplied_butNotToASnapshotStillUnderWay() {
        let plan = self.reconcile(
            CatalogSummary(committed: [], deleted: [1, 2, 3], aborted: []),
            mine: [1: "committed", 2: "deleted", 3: "pending"],
            running: [3]
        )
        #expect(plan.delete == [1])
    }

    @Test func test_anAbortElsewhere_abortsAPendingSnapshotHere_butACommittedOneIsKept() {
        let plan = self.reconcile(
            CatalogSummary(committed: [], deleted: [], aborted: [4, 5, 6]),
            mine: [4: "pending", 5: "committed", 6: "deleted"]
        )
        #expect(plan.abort == [4])
        #expect(plan.keptCommitted == [5])
        #expect(plan.delete.isEmpty && plan.wanted.isEmpty)
    }

    @Test func test_aCommitElsewhere_isFetchedWhenUnknownPendingOrAbortedHere_neverOverATombstone() {
        let plan = self.reconcile(
            CatalogSummary(committed: [7, 8, 9, 10, 11], deleted: [], aborted: []),
            mine: [8: "pending", 9: "aborted", 10: "deleted", 11: "committed"]
        )
        #expect(plan.wanted.sorted() == [7, 8, 9])
    }

    @Test func test_manyCommitsMissed_areAskedAFewPerRound_atRandom() {
        let theirs = CatalogSummary(committed: Array(1...100), deleted: [], aborted: [])
        let plan = self.reconcile(theirs, mine: [:], limit: 16)
        #expect(plan.wanted.count == 16)
        #expect(plan.wanted != Array(1...16), "shuffled, so ids that never arrive do not hold the others up")
    }
}
