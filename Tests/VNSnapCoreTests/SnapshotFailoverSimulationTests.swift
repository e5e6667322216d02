import Testing
import VNSnapCore

/// The initiator dies at a random moment of a snapshot, on a lossy, reordering network; a participant takes it
/// over with a higher term. Whatever the phase it died in, the snapshot ends committed everywhere or aborted
/// everywhere — committed whenever the dead initiator had passed its commit point — and the successor's outcome
/// says the same.
@Suite struct SnapshotFailoverSimulationTests {
    typealias F = SnapshotFixtures
    typealias World = SnapshotProtocolSimulationTests.World

    static func run(seed: UInt64, loss: Double, killAt: Int, takeOverAfter: Int = 500) -> World {
        var world = SnapshotProtocolSimulationTests.world(seed: seed, loss: loss)
        world.at(killAt, .killInitiator)
        world.at(killAt + takeOverAfter, .takeOver(F.peers[0]))
        world.run(until: 120_000)
        return world
    }

    /// Everyone who prepared ended the same way, and the successor agrees.
    static func check(_ world: World, _ label: String) {
        let prepared = Set(world.participants.keys)
        #expect(world.committedLocally.isDisjoint(with: world.abortedLocally), "\(label)")
        let committed = world.committedLocally == prepared && !prepared.isEmpty
        let aborted = world.abortedLocally == prepared
        #expect(committed || aborted, "\(label): committed \(world.committedLocally) aborted \(world.abortedLocally)")
        if world.diedIn == .committing || world.diedIn == .committed {
            #expect(committed, "\(label): the commit point was passed before the initiator died")
        }
        switch world.takeoverOutcome {
        case .committed?: #expect(committed, "\(label)")
        case .aborted?: #expect(aborted, "\(label)")
        case nil: Issue.record("\(label): the successor never finished")
        }
    }

    @Test(arguments: [0.0, 0.2])
    func test_initiatorDiesAtARandomMoment_successorCommitsOrAbortsEverywhere_neverHalf(loss: Double) {
        var phases: Set<String> = []
        var outcomes: Set<String> = []
        var built = 0
        for seed in UInt64(1)...150 {
            let killAt = Int(seed * 7 % 1_500)
            let world = Self.run(seed: seed, loss: loss, killAt: killAt)
            phases.insert("\(world.diedIn.map { "\($0)" } ?? "?")")
            outcomes.insert(
                world.takeoverOutcome.map { if case .committed = $0 { "committed" } else { "aborted" } } ?? "none"
            )
            if world.takeoverBuilt { built += 1 }
            Self.check(world, "seed \(seed), killed at \(killAt) ms in \(String(describing: world.diedIn))")
        }
        // The runs covered the phases the initiator can die in, and both outcomes.
        for phase in ["preparing", "cutting", "streaming", "committing", "committed"] {
            #expect(phases.contains(phase), "no run died in \(phase): \(phases)")
        }
        #expect(outcomes == ["committed", "aborted"], "\(outcomes)")
        #expect(built > 0, "no successor built a manifest from the durable reports")
    }

    @Test func test_initiatorDiesAfterItsCommit_successorPassesTheSameCommitOn() {
        for seed in UInt64(1)...20 {
            var world = SnapshotProtocolSimulationTests.world(seed: seed, loss: 0)
            world.run(until: 100_000)  // committed by the first initiator
            #expect(world.outcome == .committed)
            world.at(100_001, .killInitiator)
            world.at(100_500, .takeOver(F.peers[1]))
            world.run(until: 200_000)
            // Nobody holds anything unfinished: the successor just passes the commit on.
            #expect(world.takeoverOutcome == .committed, "seed \(seed)")
            #expect(world.committedLocally == Set(F.peers))
        }
    }

    @Test func test_participantWithoutVMsThatMissedTheMarker_takesTheSuccessorsCommit_insteadOfAbortingLater() {
        let plan = SnapshotPlan(vms: [F.peers[0]: ["sink"], F.peers[1]: []], mode: .cow)
        var store = TestParticipant(prepare: F.message(.prepare(plan), from: F.initiator), me: F.peers[1])
        _ = store.localPrepared(ok: true, now: .ms(1))
        let successor = F.peers[0]
        let answer = store.onMessage(F.message(.inquire(term: 4), from: successor), now: .ms(2))
        #expect(
            answer.contains { if case .send(let m, _) = $0, m.body == .holding(.unfinished) { true } else { false } }
        )
        let commit = store.onMessage(F.message(.commit([5]), from: successor), now: .ms(3))
        #expect(commit.contains(.commitLocal([5])) && store.phase == .committed)
        // Its silence limit no longer applies.
        #expect(store.onTick(now: .ms(60_000)).isEmpty)
    }

    @Test func test_holderThatHasTheMarker_isStreamingForASuccessor_notUnfinished() {
        var participant = TestParticipant(prepare: F.message(.prepare(F.plan), from: F.initiator), me: F.peers[0])
        _ = participant.localPrepared(ok: true, now: .ms(1))
        _ = participant.onMessage(F.message(.cut(holders: Set(F.peers)), from: F.initiator), now: .ms(2))
        #expect(participant.phase == .cutting)
        #expect(participant.holding == .streaming)
    }

    @Test func test_oldInitiatorsCommitAfterTheTakeover_isIgnoredByParticipants() {
        var participant = TestParticipant(prepare: F.message(.prepare(F.plan), from: F.initiator), me: F.peers[1])
        _ = participant.localPrepared(ok: true, now: .ms(1))
        _ = participant.onMessage(F.message(.cut(holders: Set(F.peers)), from: F.initiator), now: .ms(2))
        _ = participant.vmCut(F.report("relay"), now: .ms(3))
        _ = participant.imagesDurable(report: [1], now: .ms(4))
        let successor = PeerID(name: "h9")
        let answer = participant.onMessage(F.message(.inquire(term: 4), from: successor), now: .ms(5))
        #expect(
            answer.contains {
                if case .send(let m, successor) = $0, case .holding(.durable) = m.body { true } else { false }
            }
        )
        #expect(participant.initiator == successor && participant.takeoverTerm == 4)
        // The old initiator comes back with a commit: fenced.
        #expect(participant.onMessage(F.message(.commit([7]), from: F.initiator), now: .ms(6)).isEmpty)
        #expect(participant.phase == .durable)
        // An inquiry of an older term is ignored too; the successor's commit is taken.
        #expect(participant.onMessage(F.message(.inquire(term: 3), from: F.initiator), now: .ms(7)).isEmpty)
        let commit = participant.onMessage(F.message(.commit([8]), from: successor), now: .ms(8))
        #expect(commit.contains(.commitLocal([8])))
        #expect(participant.holding == .committed(manifest: [8]))
    }
}
