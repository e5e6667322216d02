import Testing
import VNSnapCore

/// Scheduled snapshots: slots, retries, failover and retention, with the wall time as a parameter.
@Suite struct ScheduleRunnerTests {
    /// 2026-12-05T00:00:00Z.
    static let day: UInt64 = 1_796_428_800

    static func hourly(keepLast: Int = 0, keepHourly: Int = 0, keepDaily: Int = 0) -> SnapshotSchedule {
        SnapshotSchedule(
            name: "hourly",
            violin: "pipeline",
            everySeconds: 3600,
            mode: .cow,
            target: .disk,
            retention: SnapshotRetention(keepLast: keepLast, keepHourly: keepHourly, keepDaily: keepDaily)
        )
    }

    /// The committed snapshot of `schedule`'s slot `slot`, taken `late` seconds into it.
    static func known(_ schedule: SnapshotSchedule, slot: UInt64, id: UInt64, late: UInt64 = 2) -> ScheduleRunner.Known
    {
        ScheduleRunner.Known(id: id, name: schedule.snapshotName(slot: slot), wallSeconds: slot + late)
    }

    @Test func test_utcTimes_roundTripThroughTheirNames_andOthersAreRefused() {
        #expect(UTCTime.iso8601(seconds: 0) == "1970-01-01T00:00:00Z")
        #expect(UTCTime.iso8601(seconds: Self.day + 3600 * 21 + 61) == "2026-12-05T21:01:01Z")
        #expect(UTCTime.iso8601(seconds: 951_782_400) == "2000-02-29T00:00:00Z")
        var state: UInt64 = 7
        for _ in 0..<2000 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let seconds = state % 253_402_300_800  // before year 10000
            #expect(UTCTime.seconds(iso8601: UTCTime.iso8601(seconds: seconds)) == seconds)
        }
        for bad in ["2026-02-29T00:00:00Z", "2026-12-05T24:00:00Z", "2026-12-05 21:00:00Z", "2026-12-5T21:00:00Z", ""] {
            #expect(UTCTime.seconds(iso8601: bad) == nil, "\(bad)")
        }
        let schedule = Self.hourly()
        #expect(schedule.snapshotName(slot: Self.day) == "hourly@2026-12-05T00:00:00Z")
        #expect(schedule.slot(ofSnapshotNamed: "hourly@2026-12-05T00:00:00Z") == Self.day)
        #expect(schedule.slot(ofSnapshotNamed: "hourlyX@2026-12-05T00:00:00Z") == nil)
        #expect(schedule.slot(ofSnapshotNamed: "manual") == nil)
    }

    @Test func test_intervals_readWithTheirUnit_othersRefused() {
        #expect(SnapshotSchedule.seconds(interval: "90s") == 90)
        #expect(SnapshotSchedule.seconds(interval: "15m") == 900)
        #expect(SnapshotSchedule.seconds(interval: "1h") == 3600)
        #expect(SnapshotSchedule.seconds(interval: "1d") == 86_400)
        #expect(SnapshotSchedule.seconds(interval: "2w") == 1_209_600)
        for bad in ["", "h", "0h", "-1h", "1.5h", "1x", "10", "99999999999999999999s", "\(UInt64.max)w"] {
            #expect(SnapshotSchedule.seconds(interval: bad) == nil, "\(bad)")
        }
    }

    @Test func test_slotNotTaken_isTakenOnce_andNotAgainUntilTheNextSlot() {
        let schedule = Self.hourly(keepLast: 10)
        var runner = ScheduleRunner(schedules: [schedule])
        let now = Self.day + 3600 * 5 + 17
        let slot = Self.day + 3600 * 5
        #expect(
            runner.tick(wallSeconds: now, isInitiator: true, catalog: [])
                == [.take(schedule: "hourly", slot: slot, name: "hourly@2026-12-05T05:00:00Z")]
        )
        // Running: not asked again.
        #expect(runner.tick(wallSeconds: now + 1, isInitiator: true, catalog: []).isEmpty)
        runner.finished(schedule: "hourly", slot: slot, error: nil, wallSeconds: now + 5)
        let taken = [Self.known(schedule, slot: slot, id: 1)]
        #expect(runner.tick(wallSeconds: now + 6, isInitiator: true, catalog: taken).isEmpty)
        #expect(runner.tick(wallSeconds: slot + 3599, isInitiator: true, catalog: taken).isEmpty)
        #expect(
            runner.tick(wallSeconds: slot + 3600, isInitiator: true, catalog: taken)
                == [.take(schedule: "hourly", slot: slot + 3600, name: "hourly@2026-12-05T06:00:00Z")]
        )
        let status = runner.status(wallSeconds: slot + 3601, catalog: taken)
        #expect(status.first?.lastID == 1 && status.first?.running == true && status.first?.nextSlot == slot + 3600)
    }

    @Test func test_notInitiator_takesAndPrunesNothing() {
        let schedule = Self.hourly(keepLast: 1)
        var runner = ScheduleRunner(schedules: [schedule])
        let catalog = (0..<3).map { Self.known(schedule, slot: Self.day + UInt64($0) * 3600, id: UInt64($0 + 1)) }
        #expect(runner.tick(wallSeconds: Self.day + 3 * 3600, isInitiator: false, catalog: catalog).isEmpty)
    }

    @Test func test_failedSlot_isTriedAgainAfterTheRetryDelay_andReportsItsError() {
        let schedule = Self.hourly(keepLast: 5)
        var runner = ScheduleRunner(schedules: [schedule])
        let slot = Self.day
        _ = runner.tick(wallSeconds: slot + 1, isInitiator: true, catalog: [])
        runner.finished(schedule: "hourly", slot: slot, error: "participant h2 died", wallSeconds: slot + 20)
        let retry = ScheduleRunner.retrySeconds(schedule)
        #expect(retry == 300)
        #expect(runner.tick(wallSeconds: slot + 20 + retry - 1, isInitiator: true, catalog: []).isEmpty)
        let status = runner.status(wallSeconds: slot + 21, catalog: [])
        #expect(status.first?.lastError == "participant h2 died" && status.first?.nextSlot == slot + 20 + retry)
        #expect(runner.tick(wallSeconds: slot + 20 + retry, isInitiator: true, catalog: []).count == 1)
    }

    @Test func test_failoverAfterMissedSlots_newInitiatorTakesOnlyTheCurrentSlot_once() {
        let schedule = Self.hourly(keepLast: 10)
        // The old initiator took 00:00 and died; nobody was initiator for three hours.
        let catalog = [Self.known(schedule, slot: Self.day, id: 1)]
        var successor = ScheduleRunner(schedules: [schedule])
        let now = Self.day + 3 * 3600 + 600
        let actions = successor.tick(wallSeconds: now, isInitiator: true, catalog: catalog)
        #expect(
            actions == [
                .take(
                    schedule: "hourly",
                    slot: Self.day + 3 * 3600,
                    name: schedule.snapshotName(slot: Self.day + 3 * 3600)
                )
            ]
        )
        #expect(successor.tick(wallSeconds: now + 30, isInitiator: true, catalog: catalog).isEmpty)

        // A successor that already sees the current slot taken (its predecessor committed it) takes nothing.
        var informed = ScheduleRunner(schedules: [schedule])
        let current = catalog + [Self.known(schedule, slot: Self.day + 3 * 3600, id: 2)]
        #expect(informed.tick(wallSeconds: now, isInitiator: true, catalog: current).isEmpty)
    }

    @Test func test_twoSnapshotsOfOneSlot_theLaterIsPruned() {
        let schedule = Self.hourly(keepLast: 10)
        var runner = ScheduleRunner(schedules: [schedule])
        let catalog = [
            Self.known(schedule, slot: Self.day, id: 5, late: 40),
            Self.known(schedule, slot: Self.day, id: 4, late: 3),
        ]
        #expect(
            runner.tick(wallSeconds: Self.day + 60, isInitiator: true, catalog: catalog) == [
                .prune(schedule: "hourly", ids: [5])
            ]
        )
        // Asked once; asked again only after the prune ended and the snapshot is still there.
        #expect(runner.tick(wallSeconds: Self.day + 61, isInitiator: true, catalog: catalog).isEmpty)
        runner.pruned(schedule: "hourly", ids: [5])
        #expect(
            runner.tick(wallSeconds: Self.day + 62, isInitiator: true, catalog: catalog) == [
                .prune(schedule: "hourly", ids: [5])
            ]
        )
    }

    @Test func test_retention_keepsTheLastAndTheNewestOfEachHourAndDay_prunesTheRest_andNeverOthersSnapshots() {
        // Every 15 minutes for three days.
        let schedule = SnapshotSchedule(
            name: "q",
            violin: "pipeline",
            everySeconds: 900,
            mode: .cow,
            target: .disk,
            retention: SnapshotRetention(keepLast: 3, keepHourly: 5, keepDaily: 3)
        )
        var catalog: [ScheduleRunner.Known] = []
        for index in 0..<(3 * 96) {
            catalog.append(Self.known(schedule, slot: Self.day + UInt64(index) * 900, id: UInt64(index + 1)))
        }
        catalog.append(ScheduleRunner.Known(id: 9999, name: "manual", wallSeconds: Self.day))
        catalog.append(ScheduleRunner.Known(id: 9998, name: "hourly@2026-12-05T00:00:00Z", wallSeconds: Self.day))
        var runner = ScheduleRunner(schedules: [schedule])
        let now = Self.day + 3 * 86_400 - 1
        let actions = runner.tick(wallSeconds: now, isInitiator: true, catalog: catalog)
        guard case .prune(_, let pruned) = actions.first, actions.count == 1 else {
            Issue.record("expected one prune: \(actions)")
            return
        }
        let kept = Set(catalog.map(\.id)).subtracting(pruned)
        // The last 3 (286, 287, 288); the newest of the last 5 hours (288, 284, 280, 276, 272); of the 3 days
        // (288, 192, 96).
        #expect(kept == [9999, 9998, 286, 287, 288, 284, 280, 276, 272, 192, 96])
    }

    @Test func test_retentionRule_bucketsByUTCHourAndDay_newestFirst() {
        let taken = [
            SnapshotRetention.Taken(id: 1, wallSeconds: Self.day + 10),
            SnapshotRetention.Taken(id: 2, wallSeconds: Self.day + 20),
            SnapshotRetention.Taken(id: 3, wallSeconds: Self.day + 3600),
            SnapshotRetention.Taken(id: 4, wallSeconds: Self.day + 86_400),
        ]
        #expect(SnapshotRetention(keepLast: 2).kept(taken) == [4, 3])
        #expect(SnapshotRetention(keepHourly: 3).kept(taken) == [4, 3, 2])
        #expect(SnapshotRetention(keepDaily: 5).kept(taken) == [4, 3])
        #expect(SnapshotRetention().kept(taken).isEmpty)
    }
}
