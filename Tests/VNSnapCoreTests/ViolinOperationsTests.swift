import Testing
import VNSnapCore

/// The initiator's table of operations per VIOLIN: one at a time, a queue in arrival order, pins, leases that
/// lapse, and a new initiator's grace for operations already under way.
@Suite struct ViolinOperationsTests {
    typealias Table = ViolinOperations<TestInstant>
    typealias Operation = Table.Operation

    static func snapshot(_ id: UInt64, on violin: String = "pipeline", by owner: String = "h1") -> Operation {
        Operation(id: id, kind: .snapshot, violin: violin, ownerName: owner)
    }

    static func restore(_ id: UInt64, of snapshot: UInt64, by owner: String = "h3") -> Operation {
        Operation(id: id, kind: .restore, violin: "pipeline", snapshot: snapshot, ownerName: owner)
    }

    static func delete(_ id: UInt64, of snapshot: UInt64, by owner: String = "h2") -> Operation {
        Operation(id: id, kind: .delete, violin: "pipeline", snapshot: snapshot, ownerName: owner)
    }

    /// A table past its grace.
    func table() -> Table {
        Table(now: .zero, lease: .seconds(10), waiterSilence: .seconds(5), grace: .seconds(3))
    }

    @Test func test_twoSnapshotsOfOneViolinAtOnce_theSecondIsRefusedNamingTheFirst_whenItDoesNotWait() {
        var table = self.table()
        #expect(table.request(Self.snapshot(1), wait: false, leased: false, now: .ms(4_000)) == .granted)
        table.started(1, snapshot: 77)
        let second = table.request(Self.snapshot(2, by: "h2"), wait: false, leased: false, now: .ms(4_001))
        #expect(second == .refused("a snapshot of pipeline (id 77), asked on h1 is in progress"))
        #expect(
            table.request(Self.snapshot(3, on: "other"), wait: false, leased: false, now: .ms(4_002)) == .granted,
            "another VIOLIN is not held up"
        )
    }

    @Test func test_aWaitingRequest_isQueuedInArrivalOrder_andRunsWhenTheFirstIsReleased() {
        var table = self.table()
        _ = table.request(Self.snapshot(1), wait: true, leased: false, now: .ms(4_000))
        let restore = table.request(Self.restore(2, of: 50), wait: true, leased: true, now: .ms(4_001))
        #expect(restore == .queued(position: 1, behind: Self.snapshot(1)))
        let snapshot = table.request(Self.snapshot(3, by: "h2"), wait: true, leased: false, now: .ms(4_002))
        #expect(snapshot == .queued(position: 2, behind: Self.snapshot(1)))
        table.release(1)
        #expect(
            table.request(Self.snapshot(3, by: "h2"), wait: true, leased: false, now: .ms(4_003))
                == .queued(position: 2, behind: Self.restore(2, of: 50)),
            "free, but the restore asked first"
        )
        #expect(table.request(Self.restore(2, of: 50), wait: true, leased: true, now: .ms(4_004)) == .granted)
        #expect(table.running(on: "pipeline") == Self.restore(2, of: 50))
    }

    @Test func test_aQueuedAskerThatStopsAsking_losesItsPlace() {
        var table = self.table()
        _ = table.request(Self.snapshot(1), wait: true, leased: false, now: .ms(4_000))
        _ = table.request(Self.restore(2, of: 50), wait: true, leased: true, now: .ms(4_000))
        _ = table.request(Self.snapshot(3), wait: true, leased: false, now: .ms(4_000))
        _ = table.request(Self.snapshot(3), wait: true, leased: false, now: .ms(8_000))
        table.release(1)
        #expect(
            table.request(Self.snapshot(3), wait: true, leased: false, now: .ms(9_500)) == .granted,
            "the restorer was silent for 5.5 s"
        )
    }

    @Test func test_aRestoresLease_isKeptByRenewal_andLapsesWhenItsOwnerFallsSilent() {
        var table = self.table()
        #expect(table.request(Self.restore(2, of: 50), wait: true, leased: true, now: .ms(4_000)) == .granted)
        #expect(table.request(Self.restore(2, of: 50), wait: true, leased: true, now: .ms(12_000)) == .granted)
        #expect(table.expire(now: .ms(21_000)).isEmpty, "renewed at 12 s: good until 22 s")
        #expect(table.expire(now: .ms(22_000)) == [Self.restore(2, of: 50)])
        #expect(table.request(Self.snapshot(3), wait: false, leased: false, now: .ms(22_001)) == .granted)
    }

    @Test func test_theInitiatorsOwnSnapshot_neverLapses_untilReleased() {
        var table = self.table()
        _ = table.request(Self.snapshot(1), wait: false, leased: false, now: .ms(4_000))
        #expect(table.expire(now: .ms(3_600_000)).isEmpty)
        table.release(1)
        #expect(table.running(on: "pipeline") == nil)
    }

    @Test func test_deleteOfASnapshotBeingRestored_isRefusedNamingTheRestore_andAllowedOnceItEnded() {
        var table = self.table()
        _ = table.request(Self.restore(2, of: 50), wait: true, leased: true, now: .ms(4_000))
        #expect(table.user(of: 50) == Self.restore(2, of: 50))
        let refused = table.request(Self.delete(9, of: 50), wait: false, leased: true, now: .ms(4_001))
        #expect(
            refused
                == .refused(
                    "snapshot 50 is in use by a restore of snapshot 50 of pipeline, asked on h3; delete it when that has ended"
                )
        )
        #expect(table.request(Self.delete(8, of: 49), wait: false, leased: true, now: .ms(4_002)) == .granted)
        table.release(2)
        #expect(table.request(Self.delete(9, of: 50), wait: false, leased: true, now: .ms(4_003)) == .granted)
    }

    @Test func test_aRestoreOfASnapshotBeingDeleted_isRefused_andTheDeleteDoesNotHoldTheViolin() {
        var table = self.table()
        _ = table.request(Self.delete(9, of: 50), wait: false, leased: true, now: .ms(4_000))
        #expect(
            table.request(Self.restore(2, of: 50), wait: true, leased: true, now: .ms(4_001))
                == .refused("snapshot 50 is being deleted (a delete of snapshot 50 of pipeline, asked on h2)")
        )
        #expect(table.request(Self.snapshot(3), wait: false, leased: false, now: .ms(4_002)) == .granted)
        #expect(
            table.request(Self.delete(10, of: 50), wait: false, leased: true, now: .ms(4_003))
                == .refused(
                    "snapshot 50 is already being deleted (a delete of snapshot 50 of pipeline, asked on h2)"
                )
        )
    }

    @Test func test_aNewInitiatorsGrace_grantsOperationsAlreadyHeld_andQueuesNewOnes() {
        var table = Table(now: .zero, grace: .seconds(3))
        let fresh = table.request(Self.snapshot(1), wait: true, leased: false, now: .ms(100))
        #expect(fresh == .queued(position: 1, behind: nil), "behind whatever the predecessor granted")
        #expect(
            table.request(Self.restore(2, of: 50), wait: true, leased: true, held: true, now: .ms(200)) == .granted,
            "a restore the previous initiator granted keeps the VIOLIN"
        )
        #expect(
            table.request(Self.snapshot(1), wait: true, leased: false, now: .ms(3_100))
                == .queued(position: 1, behind: Self.restore(2, of: 50))
        )
        if case .refused = table.request(Self.snapshot(4), wait: false, leased: false, now: .ms(300)) {
        } else {
            Issue.record("a request that does not wait is refused in the grace")
        }
    }

    @Test func test_duplicatedAndReorderedAsks_neverGrantTwoOperationsOfOneViolin() {
        // Each asker asks repeatedly, in a shuffled order, while the holder releases at random moments.
        var generator = SeededGenerator(seed: 13)
        for _ in 0..<200 {
            var table = self.table()
            var now = 4_000
            var finished: Set<UInt64> = []
            for _ in 0..<60 {
                now += Int.random(in: 0...400, using: &generator)
                let id = UInt64.random(in: 1...4, using: &generator)
                guard !finished.contains(id) else { continue }
                let operation = id % 2 == 0 ? Self.restore(id, of: 50) : Self.snapshot(id)
                let decision = table.request(
                    operation,
                    wait: true,
                    leased: operation.kind == .restore,
                    now: .ms(now)
                )
                if decision == .granted {
                    #expect(table.running(on: "pipeline")?.id == id)
                    if Bool.random(using: &generator) {
                        table.release(id)
                        finished.insert(id)
                    }
                } else if case .queued(_, let behind) = decision {
                    #expect(behind?.id != id)
                }
            }
        }
    }
}
