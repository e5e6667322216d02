import Testing
import VNSnapCore

/// The merge plan over a VM's disk files: B is the configured disk, L1… frozen layers, A the VM's overlay.
struct DiskLayerPlanTests {
    /// A chain from the bottom up: each file rests on the one before it.
    static func chain(_ files: [String]) -> [String: String?] {
        var parents: [String: String?] = [:]
        for (index, file) in files.enumerated() { parents[file] = index == 0 ? nil : files[index - 1] }
        return parents
    }

    @Test func everyLayerPinned_planIsEmpty() {
        let plan = DiskLayerPlan(
            parents: Self.chain(["B", "L1", "L2", "A"]),
            owned: ["L1", "L2", "A"],
            pinned: ["B", "L1", "L2"],
            active: "A"
        )
        #expect(plan.actions.isEmpty)
    }

    @Test func oldestSnapshotDeleted_itsLayerMergedIntoTheNextFrozenOne() {
        // B pinned by the first snapshot, L1 by the second (deleted), L2 by the third.
        let plan = DiskLayerPlan(
            parents: Self.chain(["B", "L1", "L2", "A"]),
            owned: ["L1", "L2", "A"],
            pinned: ["B", "L2"],
            active: "A"
        )
        #expect(plan.actions == [.merge(into: "L2", dropping: ["L1"], base: "B")])
    }

    @Test func newestSnapshotDeleted_itsLayerMergedIntoTheVMsOverlay() {
        let plan = DiskLayerPlan(
            parents: Self.chain(["B", "L1", "A"]),
            owned: ["L1", "A"],
            pinned: ["B"],
            active: "A"
        )
        #expect(plan.actions == [.merge(into: "A", dropping: ["L1"], base: "B")])
    }

    @Test func severalDeletedInARow_mergedInOneCopy_theConfiguredDiskNeverTouched() {
        let plan = DiskLayerPlan(
            parents: Self.chain(["B", "L1", "L2", "L3", "L4", "A"]),
            owned: ["L1", "L2", "L3", "L4", "A"],
            pinned: ["L4"],
            active: "A"
        )
        #expect(plan.actions == [.merge(into: "L4", dropping: ["L3", "L2", "L1"], base: "B")])
    }

    @Test func allSnapshotsDeleted_chainShrinksToTheVMsOverlayOnTheConfiguredDisk() {
        let plan = DiskLayerPlan(
            parents: Self.chain(["B", "L1", "L2", "A"]),
            owned: ["L1", "L2", "A"],
            pinned: [],
            active: "A"
        )
        #expect(plan.actions == [.merge(into: "A", dropping: ["L2", "L1"], base: "B")])
    }

    @Test func afterARestore_theOldOverlayAndLayersOnlyItUsedAreRemoved() {
        // Restored to the snapshot pinning L1: the VM runs on R; A (its old overlay) and L2 (deleted) serve nothing.
        var parents = Self.chain(["B", "L1", "L2", "A"])
        parents["R"] = "L1"
        let plan = DiskLayerPlan(parents: parents, owned: ["L1", "L2", "A", "R"], pinned: ["L1"], active: "R")
        #expect(plan.actions == [.remove("A"), .remove("L2")])
    }

    @Test func aLayerTwoBranchesRestOn_kept() {
        // L1's snapshot deleted, but both the VM's overlay and a later snapshot's layer on the old branch need it.
        var parents = Self.chain(["B", "L1", "L2"])
        parents["R"] = "L1"
        let plan = DiskLayerPlan(parents: parents, owned: ["L1", "L2", "R"], pinned: ["L2"], active: "R")
        #expect(plan.actions.isEmpty)
    }

    @Test func filesNotOurs_neverRemovedOrMerged() {
        // A shared base image below the configured disk, and a stray file someone else put beside.
        var parents = Self.chain(["Shared", "B", "L1", "A"])
        parents["Stray"] = nil
        let plan = DiskLayerPlan(parents: parents, owned: ["L1", "A"], pinned: ["L1"], active: "A")
        #expect(plan.actions.isEmpty)
    }

    @Test func configuredDiskRestingOnOurFiles_neverMergedInto() {
        // An operator pointed `disk` at an overlay: the layers below it are left as they are.
        let plan = DiskLayerPlan(parents: Self.chain(["B", "L1", "C"]), owned: ["L1"], pinned: [], active: "C")
        #expect(plan.actions.isEmpty)
    }

    @Test func noVMRunning_noActiveFile_unpinnedLeavesRemovedDownToThePinnedOne() {
        let plan = DiskLayerPlan(
            parents: Self.chain(["B", "L1", "L2", "A"]),
            owned: ["L1", "L2", "A"],
            pinned: ["L1"],
            active: nil
        )
        #expect(plan.actions == [.remove("A"), .remove("L2")])
    }
}
