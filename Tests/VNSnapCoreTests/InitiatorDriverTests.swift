import Testing
import VNSnapCore

/// The initiator's side as a driver: requests granted, queued or refused per VIOLIN, polls answered from its
/// books, a run's end freeing its VIOLIN for the next, a fresh table on taking office, a run taken over by a
/// successor falling silent.
@Suite struct InitiatorDriverTests {
    typealias F = SnapshotFixtures
    typealias Driver = InitiatorDriver<TestInstant>

    static let term: UInt64 = 3
    /// A restore of snapshot 50 asked on h3.
    static let restore = ViolinOperations<TestInstant>.Operation(
        id: 9,
        kind: .restore,
        violin: "pipeline",
        snapshot: 50,
        ownerName: "h3"
    )

    /// A driver in office for `term` at time zero, past its table's grace by the first request.
    func inOffice() -> Driver {
        var driver = Driver(me: F.initiator, myName: "h0")
        let inOffice = driver.holdsOffice(initiator: F.initiator, term: Self.term, now: .zero)
        #expect(inOffice)
        return driver
    }

    func request(_ driver: inout Driver, _ id: UInt64, wait: Bool = true, at ms: Int) -> Driver.RequestDecision {
        driver.request(id, violin: "pipeline", ownerName: "h1", wait: wait, inOffice: true, now: .ms(ms))
    }

    /// Starts the snapshot of request `requestID` as snapshot `F.key` (id 7).
    func start(_ driver: inout Driver, requestID: UInt64, at ms: Int) -> [Driver.Directive] {
        let machine = TestInitiator(key: F.key, me: F.initiator, plan: F.plan, now: .ms(ms))
        return driver.started(machine, name: "nightly", requestID: requestID, now: .ms(ms))
    }

    /// Runs snapshot 7 to its end: a participant fails, and every participant aborts it.
    func abortRun(_ driver: inout Driver, at ms: Int) -> [Driver.Directive] {
        _ = driver.onMessage(F.message(.failed("disk full"), from: F.peers[0]), now: .ms(ms))
        var last: [Driver.Directive] = []
        for peer in F.peers {
            last = driver.onMessage(F.message(.aborted, from: peer), now: .ms(ms + 1))
        }
        return last
    }

    @Test func test_aRequestInOffice_isGranted_andItsPollsAreAnsweredFromTheBooks_withoutAskingTheTableAgain() {
        var driver = self.inOffice()
        let result1 = self.request(&driver, 100, at: 4_000)
        #expect(result1 == .start)
        let preparing = SnapshotProgress(snapshotID: 0, phase: "preparing", finished: false)
        let result2 = self.request(&driver, 100, at: 4_001)
        #expect(result2 == .answer(preparing), "a poll while it is planned")
        let directives = self.start(&driver, requestID: 100, at: 4_002)
        #expect(directives.sent.map(\.1) == F.peers.sorted(), "prepare to every participant")
        #expect(driver.progress(ofRequest: 100)?.snapshotID == F.key.id)
        #expect(driver.running(on: "pipeline")?.requestID == 100)
        #expect(driver.nextTick != nil, "the machine's retransmission tick is kept")
    }

    @Test func test_aSecondRequestForABusyViolin_waitsNamingTheFirst_andStartsOnceTheFirstHasEnded() {
        var driver = self.inOffice()
        _ = self.request(&driver, 100, at: 4_000)
        _ = self.start(&driver, requestID: 100, at: 4_001)
        guard case .answer(let queued) = self.request(&driver, 200, at: 4_002) else {
            Issue.record("the second request was not answered")
            return
        }
        #expect(queued.phase == "queued" && !queued.finished)
        #expect(queued.message.contains("a snapshot of pipeline (id 7), asked on h1"), "\(queued.message)")
        let end = self.abortRun(&driver, at: 4_003)
        #expect(end.contains { if case .finished(.aborted) = $0 { true } else { false } })
        #expect(driver.progress(ofRequest: 100)?.phase == "aborted")
        let result3 = self.request(&driver, 200, at: 4_010)
        #expect(result3 == .start, "the VIOLIN is free again")
    }

    @Test func test_aRequestThatDoesNotWait_isRefusedAtOnce_andItsPollsGetTheSameRefusal() {
        var driver = self.inOffice()
        _ = self.request(&driver, 100, at: 4_000)
        _ = self.start(&driver, requestID: 100, at: 4_001)
        let refused = self.request(&driver, 200, wait: false, at: 4_002)
        guard case .answer(let progress) = refused else {
            Issue.record("not answered: \(refused)")
            return
        }
        #expect(progress.phase == "refused" && progress.finished)
        let result4 = self.request(&driver, 200, wait: false, at: 4_003)
        #expect(result4 == refused)
    }

    @Test func test_aRequestThatCouldNotStart_releasesItsViolin_andIsToldWhy() {
        var driver = self.inOffice()
        _ = self.request(&driver, 100, at: 4_000)
        let refused = driver.notStarted(100, reason: "unknown VIOLIN", now: .ms(4_001))
        #expect(refused.phase == "refused" && refused.message == "unknown VIOLIN")
        let result5 = self.request(&driver, 200, wait: false, at: 4_002)
        #expect(result5 == .start)
    }

    @Test func test_outOfOffice_aNewRequestIsNotServed_butAKnownOneIsStillAnswered() {
        var driver = self.inOffice()
        _ = self.request(&driver, 100, at: 4_000)
        _ = self.start(&driver, requestID: 100, at: 4_001)
        let result6 = driver.holdsOffice(initiator: F.peers[0], term: 4, now: .ms(4_002))
        #expect(!result6)
        #expect(driver.operations == nil)
        #expect(
            driver.request(200, violin: "pipeline", ownerName: "h1", wait: true, inOffice: false, now: .ms(4_003))
                == .notInitiator
        )
        guard
            case .answer(let known) = driver.request(
                100,
                violin: "pipeline",
                ownerName: "h1",
                wait: true,
                inOffice: false,
                now: .ms(4_003)
            )
        else {
            Issue.record("the running request went unanswered")
            return
        }
        #expect(known.snapshotID == F.key.id)
    }

    @Test func test_takingOfficeAgainInANewTerm_holdsItsOwnUnfinishedRuns_soAnotherSnapshotWaits() {
        var driver = self.inOffice()
        _ = self.request(&driver, 100, at: 4_000)
        _ = self.start(&driver, requestID: 100, at: 4_001)
        _ = driver.holdsOffice(initiator: nil, term: 4, now: .ms(4_002))
        let result7 = driver.holdsOffice(initiator: F.initiator, term: 5, now: .ms(8_000))
        #expect(result7)
        #expect(driver.operations?.running(on: "pipeline")?.snapshot == F.key.id)
        guard case .answer(let queued) = self.request(&driver, 200, at: 12_000) else {
            Issue.record("a second snapshot started beside the first")
            return
        }
        #expect(queued.phase == "queued")
    }

    @Test func test_aRunTakenOverByAHigherTerm_fallsSilent_releasesItsViolin_andIgnoresItsMessages() {
        var driver = self.inOffice()
        _ = self.request(&driver, 100, at: 4_000)
        _ = self.start(&driver, requestID: 100, at: 4_001)
        let result8 = driver.superseded(F.key.id, successorTerm: F.key.term, now: .ms(4_002))
        #expect(!result8, "same term: not news")
        let result9 = driver.superseded(F.key.id, successorTerm: F.key.term + 1, now: .ms(4_002))
        #expect(result9)
        let result10 = self.request(&driver, 100, at: 4_003)
        #expect(result10 == .silent, "the requester follows the successor")
        let result11 = driver.onMessage(F.message(.prepared(ok: true, reason: nil), from: F.peers[0]), now: .ms(4_004))
        #expect(result11.isEmpty)
        let result12 = driver.tick(now: .ms(60_000))
        #expect(result12.isEmpty)
        let result13 = self.request(&driver, 200, at: 4_005)
        #expect(result13 == .start)
    }

    @Test func test_operationsFromOtherPeers_areAnsweredOnlyInOffice_andReleasedWhenDone() {
        var driver = self.inOffice()
        let restore = Self.restore
        let result14 = driver.operation(restore, wait: true, held: false, inOffice: false, now: .ms(4_000))
        #expect(result14 == nil)
        let result15 = driver.operation(restore, wait: true, held: false, inOffice: true, now: .ms(4_000))
        #expect(result15 == .granted)
        guard case .answer(let queued) = self.request(&driver, 100, at: 4_001) else {
            Issue.record("a snapshot started during a restore")
            return
        }
        #expect(queued.message.contains("a restore of snapshot 50 of pipeline, asked on h3"), "\(queued.message)")
        driver.operationDone(9)
        let result16 = self.request(&driver, 100, at: 4_002)
        #expect(result16 == .start)
    }

    @Test func test_aRestoreWhoseOwnerFallsSilent_lapses_andIsReturned() {
        var driver = self.inOffice()
        let restore = Self.restore
        _ = driver.operation(restore, wait: true, held: false, inOffice: true, now: .ms(4_000))
        let result17 = driver.expire(now: .ms(5_000))
        #expect(result17.isEmpty)
        let result18 = driver.expire(now: .ms(14_001))
        #expect(result18.map(\.id) == [9])
    }

    @Test func test_streamedBytes_showInThePollWhileStreaming_andEndedRunsAreForgottenAfterTenMinutes() {
        var driver = self.inOffice()
        _ = self.request(&driver, 100, at: 4_000)
        _ = self.start(&driver, requestID: 100, at: 4_001)
        for peer in F.peers {
            _ = driver.onMessage(F.message(.prepared(ok: true, reason: nil), from: peer), now: .ms(4_002))
        }
        driver.streamed(F.key.id, [VMStreamedBytes(vm: "sink", rawBytes: 4 << 20, storedBytes: 1 << 20)])
        #expect(driver.progress(ofRequest: 100)?.message.contains("sink 4.0/1.0") == true)
        _ = self.abortRun(&driver, at: 4_003)
        driver.forget(now: .ms(4_004 + 599_000))
        #expect(driver.runs[F.key.id] != nil)
        driver.forget(now: .ms(4_004 + 601_000))
        #expect(driver.runs[F.key.id] == nil)
    }
}
