import Testing
import VNSnapCore

/// Ownership of VMs (issue 14): the start-up decision table, records merged by generation, moves written by an
/// initiator, and the fencing lease's transitions.
@Suite struct OwnershipTests {
    static func record(_ vm: String = "relay", owner: String, generation: UInt64, term: UInt64 = 1) -> VMOwnership {
        VMOwnership(vm: vm, violin: "pipeline", owner: owner, generation: generation, term: term)
    }

    @Test(arguments: [
        (nil as String?, false, "start"),
        (nil, true, "reattach"),
        ("h2", false, "start"),
        ("h2", true, "reattach"),
        ("h4", false, "stayStopped"),
        ("h4", true, "stopStale"),
    ])
    func test_startUpDecision_forEveryRecordAndRunningState_isTheTablesRow(
        owner: String?,
        running: Bool,
        expected: String
    ) {
        let record = owner.map { Self.record(owner: $0, generation: 3) }
        let decision = VMStartDecision.decide(me: "h2", record: record, runningHere: running)
        let name: String =
            switch decision {
            case .start: "start"
            case .reattach: "reattach"
            case .stayStopped(let seen): seen == record ? "stayStopped" : "wrong record"
            case .stopStale(let seen): seen == record ? "stopStale" : "wrong record"
            }
        #expect(name == expected)
        #expect(decision.runs == (expected == "start" || expected == "reattach"))
    }

    @Test func test_mergingRecords_theHigherGenerationWins_thenTheHigherTerm_andOlderOnesChangeNothing() {
        let known = ["relay": Self.record(owner: "h4", generation: 3, term: 5)]
        #expect(VMOwnership.merge([Self.record(owner: "h2", generation: 2, term: 9)], into: known).isEmpty)
        #expect(VMOwnership.merge([Self.record(owner: "h4", generation: 3, term: 5)], into: known).isEmpty, "same")
        let newer = Self.record(owner: "h1", generation: 4, term: 6)
        #expect(VMOwnership.merge([newer], into: known) == [newer])
        let laterTerm = Self.record(owner: "h3", generation: 3, term: 7)
        #expect(VMOwnership.merge([laterTerm], into: known) == [laterTerm])
        // Several of one VM in one batch: only the newest counts; a VM not known yet is taken.
        let sink = Self.record("sink", owner: "h1", generation: 1)
        #expect(VMOwnership.merge([newer, laterTerm, sink], into: known) == [newer, sink])
        #expect(newer.summary == "moved to h1 (generation 4)")
    }

    @Test func test_movesOfARestore_bumpTheGenerationOnlyOfVMsPlacedElsewhereThanTheyRun() {
        let known = ["relay": Self.record(owner: "h4", generation: 3)]
        let moves = VMOwnership.moves(
            ["relay": "h2", "sink": "h3", "source": "h4"],
            violin: "pipeline",
            known: known,
            configured: ["relay": "h2", "sink": "h3", "source": "h1"],
            term: 8
        )
        #expect(
            moves == [
                VMOwnership(vm: "relay", violin: "pipeline", owner: "h2", generation: 4, term: 8),
                VMOwnership(vm: "source", violin: "pipeline", owner: "h4", generation: 1, term: 8),
            ],
            "the relay goes back to h2, over its record; the source leaves its configured h1; the sink stays"
        )
    }

    @Test func test_fence_pausesAfterTheLeaseWithoutAMajority_andResumesOnlyOnceOwnershipIsHeardWithAMajority() {
        var fence = FenceLease<TestInstant>(after: .seconds(10), now: .zero)
        let seen1 = fence.observe(majority: true, now: .ms(1_000))
        #expect(seen1 == nil)
        let seen2 = fence.observe(majority: false, now: .ms(10_999))
        #expect(seen2 == nil, "the lease counts from the last majority")
        let seen3 = fence.observe(majority: false, now: .ms(11_000))
        #expect(seen3 == .pause)
        #expect(fence.fenced)
        let seen4 = fence.observe(majority: false, now: .ms(12_000))
        #expect(seen4 == nil, "paused once")
        let seen5 = fence.ownershipHeard(now: .ms(12_500))
        #expect(seen5 == nil, "records heard without a majority do not resume")
        let seen6 = fence.observe(majority: true, now: .ms(13_000))
        #expect(seen6 == nil, "a majority alone does not resume")
        let seen7 = fence.ownershipHeard(now: .ms(13_500))
        #expect(seen7 == .resume)
        #expect(!fence.fenced)
        let seen8 = fence.ownershipHeard(now: .ms(14_000))
        #expect(seen8 == nil)
    }

    @Test func test_fence_aMajorityLostAgainBeforeOwnershipIsHeard_staysFenced() {
        var fence = FenceLease<TestInstant>(after: .seconds(10), now: .zero)
        let seen9 = fence.observe(majority: false, now: .ms(10_000))
        #expect(seen9 == .pause, "a peer that never saw one is fenced")
        _ = fence.observe(majority: true, now: .ms(11_000))
        _ = fence.observe(majority: false, now: .ms(11_500))
        let seen10 = fence.ownershipHeard(now: .ms(12_000))
        #expect(seen10 == nil)
        #expect(fence.fenced)
        _ = fence.observe(majority: true, now: .ms(12_500))
        let seen11 = fence.ownershipHeard(now: .ms(13_000))
        #expect(seen11 == .resume)
    }
}
