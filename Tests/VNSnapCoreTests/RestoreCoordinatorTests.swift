import Testing
import VNSnapCore

/// The restorer's side: verify everywhere, then load everywhere, then resume everywhere; a refusal or a
/// silent holder ends it in the step it happened, before the next step is asked of anyone.
@Suite struct RestoreCoordinatorTests {
    typealias F = SnapshotFixtures
    typealias Coordinator = RestoreCoordinator<TestInstant>

    func answer(_ step: RestoreStep, from peer: PeerID, ok: Bool = true, reason: String = "", run: UInt64 = 5)
        -> SnapshotMessage
    {
        F.message(
            .restoreAnswer(run: run, step: step, ok: ok, reason: reason, blob: [UInt8(step.rawValue)]),
            from: peer
        )
    }

    func requested(_ directives: [Coordinator.Directive]) -> [(RestoreStep, PeerID)] {
        directives.compactMap {
            guard case .send(let message, let peer) = $0, case .restore(_, let step, _, _) = message.body else {
                return nil
            }
            return (step, peer)
        }
    }

    func coordinator() -> Coordinator {
        Coordinator(key: F.key, run: 5, me: F.initiator, holders: Set(F.peers), now: .zero)
    }

    @Test func test_everyHolderAnswersEachStep_stepsFollowInOrder_andTheRestoreSucceeds() {
        var restore = self.coordinator()
        #expect(self.requested(restore.start()).map(\.0) == [.verify, .verify])
        #expect(restore.onMessage(self.answer(.verify, from: F.peers[0]), now: .ms(1)).isEmpty)
        // A duplicate answer counts once.
        #expect(restore.onMessage(self.answer(.verify, from: F.peers[0]), now: .ms(2)).isEmpty)
        let load = restore.onMessage(self.answer(.verify, from: F.peers[1]), now: .ms(3))
        #expect(load.first == .stepDone(.verify, [F.peers[0]: [1], F.peers[1]: [1]]))
        #expect(self.requested(load).map(\.0) == [.load, .load])
        _ = restore.onMessage(self.answer(.load, from: F.peers[1]), now: .ms(4))
        let resume = restore.onMessage(self.answer(.load, from: F.peers[0]), now: .ms(5))
        #expect(self.requested(resume).map(\.0) == [.resume, .resume])
        _ = restore.onMessage(self.answer(.resume, from: F.peers[0]), now: .ms(6))
        let done = restore.onMessage(self.answer(.resume, from: F.peers[1]), now: .ms(7))
        #expect(done == [.stepDone(.resume, [F.peers[0]: [3], F.peers[1]: [3]])])
        #expect(restore.succeeded && restore.step == nil)
    }

    @Test func test_aHolderRefusesToVerify_theRestoreFailsThere_andNoLoadIsEverAsked() {
        var restore = self.coordinator()
        _ = restore.start()
        _ = restore.onMessage(self.answer(.verify, from: F.peers[0]), now: .ms(1))
        let failed = restore.onMessage(
            self.answer(.verify, from: F.peers[1], ok: false, reason: "h2: snapshot 7, VM relay, chunk 3: corrupt"),
            now: .ms(2)
        )
        #expect(failed == [.failed(.verify, "h2: snapshot 7, VM relay, chunk 3: corrupt")])
        #expect(self.requested(restore.onTick(now: .ms(1_000))).isEmpty, "nothing more is asked")
        #expect(!restore.succeeded)
    }

    @Test func test_lostRequests_areResentOnlyToTheSilent_andASilentHolderFailsTheStepAtItsDeadline() {
        var restore = self.coordinator()
        _ = restore.start()
        _ = restore.onMessage(self.answer(.verify, from: F.peers[0]), now: .ms(1))
        #expect(self.requested(restore.onTick(now: .ms(100))).isEmpty, "not yet due")
        #expect(self.requested(restore.onTick(now: .ms(301))).map(\.1) == [F.peers[1]])
        let failed = restore.onTick(now: .ms(301_000))
        #expect(failed == [.failed(.verify, "no answer in step verify from \(F.peers[1])")])
    }

    @Test func test_answersOfAnotherRun_anotherStep_orAStranger_areIgnored() {
        var restore = self.coordinator()
        _ = restore.start()
        #expect(restore.onMessage(self.answer(.verify, from: F.peers[0], run: 6), now: .ms(1)).isEmpty)
        #expect(restore.onMessage(self.answer(.load, from: F.peers[0]), now: .ms(1)).isEmpty)
        #expect(restore.onMessage(self.answer(.verify, from: PeerID(name: "h9")), now: .ms(1)).isEmpty)
        _ = restore.onMessage(self.answer(.verify, from: F.peers[0]), now: .ms(2))
        #expect(restore.step == .verify, "one holder is still missing")
    }
}
