import Testing
import VNSnapCore

/// The restorer's side: verify, load beside, pause, switch over, resume, each everywhere before the next; a refusal or a
/// silent holder ends it in the step it happened, before the next step is asked of anyone, and one after the load
/// began rolls every holder back first.
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
        let pause = restore.onMessage(self.answer(.load, from: F.peers[0]), now: .ms(5))
        #expect(self.requested(pause).map(\.0) == [.pause, .pause])
        _ = restore.onMessage(self.answer(.pause, from: F.peers[1]), now: .ms(6))
        let switchOver = restore.onMessage(self.answer(.pause, from: F.peers[0]), now: .ms(6))
        #expect(self.requested(switchOver).map(\.0) == [.switchOver, .switchOver])
        _ = restore.onMessage(self.answer(.switchOver, from: F.peers[0]), now: .ms(6))
        #expect(restore.step == .switchOver, "no VM resumes before every holder has switched over")
        let resume = restore.onMessage(self.answer(.switchOver, from: F.peers[1]), now: .ms(6))
        #expect(self.requested(resume).map(\.0) == [.resume, .resume])
        _ = restore.onMessage(self.answer(.resume, from: F.peers[0]), now: .ms(6))
        let done = restore.onMessage(self.answer(.resume, from: F.peers[1]), now: .ms(7))
        #expect(done == [.stepDone(.resume, [F.peers[0]: [6], F.peers[1]: [6]])])
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

    /// Brings a restore to `step`, every holder having done the steps before.
    func restore(at step: RestoreStep) -> Coordinator {
        var restore = self.coordinator()
        _ = restore.start()
        var now = 1
        for done in RestoreStep.forward.prefix(while: { $0 != step }) {
            for peer in F.peers {
                _ = restore.onMessage(self.answer(done, from: peer), now: .ms(now))
                now += 1
            }
        }
        return restore
    }

    @Test(arguments: [RestoreStep.load, .pause])
    func test_aHolderFailsAfterTheLoadBegan_everyHolderRollsBack_andTheFailureSaysSo(step: RestoreStep) {
        var restore = self.restore(at: step)
        #expect(restore.step == step)
        _ = restore.onMessage(self.answer(step, from: F.peers[0]), now: .ms(10))
        let rollback = restore.onMessage(
            self.answer(step, from: F.peers[1], ok: false, reason: "h2: relay: image unreadable"),
            now: .ms(11)
        )
        #expect(self.requested(rollback).map(\.0) == [.rollback, .rollback], "the holder that succeeded too")
        #expect(!rollback.contains { if case .failed = $0 { true } else { false } }, "not before the rollback")
        #expect(Set(self.requested(restore.onTick(now: .ms(400))).map(\.1)) == Set(F.peers), "resent until answered")
        _ = restore.onMessage(self.answer(.rollback, from: F.peers[1]), now: .ms(500))
        let failed = restore.onMessage(self.answer(.rollback, from: F.peers[0]), now: .ms(501))
        #expect(
            failed == [
                .failed(
                    step,
                    "h2: relay: image unreadable; rolled back: every VM runs as it did before the restore"
                )
            ]
        )
        #expect(!restore.succeeded && restore.step == nil)
        #expect(self.requested(restore.onTick(now: .ms(10_000))).isEmpty, "no resume is ever asked")
    }

    @Test func test_aHolderSilentInPause_rollbackAfterTheDeadline_andASilentRollbackIsReported() {
        var restore = self.restore(at: .pause)
        _ = restore.onMessage(self.answer(.pause, from: F.peers[0]), now: .ms(10))
        let rollback = restore.onTick(now: .ms(40_000))
        #expect(self.requested(rollback).map(\.0) == [.rollback, .rollback])
        _ = restore.onMessage(self.answer(.rollback, from: F.peers[0]), now: .ms(40_100))
        let failed = restore.onTick(now: .ms(101_000))
        guard case .failed(.pause, let reason) = failed.first else {
            Issue.record("Expected .failed(.pause, …), but got \(failed)")
            return
        }
        #expect(
            reason.hasPrefix(
                "no answer in step pause from \(F.peers[1]); rollback incomplete (no answer from \(F.peers[1])"
            )
        )
    }

    @Test func test_aHolderFailsToSwitchOver_everyHolderIsStillAskedToResume_onceAllAnswered_andTheFailureSaysSo() {
        var restore = self.restore(at: .switchOver)
        let failed = restore.onMessage(
            self.answer(.switchOver, from: F.peers[0], ok: false, reason: "h1: sink: promote failed"),
            now: .ms(9)
        )
        #expect(failed.isEmpty, "the other holder may still be switching over: nobody resumes yet")
        let resume = restore.onMessage(self.answer(.switchOver, from: F.peers[1]), now: .ms(10))
        #expect(self.requested(resume).map(\.0) == [.resume, .resume])
        _ = restore.onMessage(self.answer(.resume, from: F.peers[0]), now: .ms(11))
        let done = restore.onMessage(self.answer(.resume, from: F.peers[1]), now: .ms(12))
        #expect(
            done.last == .failed(.switchOver, "h1: sink: promote failed; the VMs that switched over were resumed")
        )
        #expect(!restore.succeeded && restore.step == nil)
    }

    @Test func test_aHolderSilentInTheSwitchOver_pastTheDeadline_theOthersAreResumed_andTheSilentOneNamed() {
        var restore = self.restore(at: .switchOver)
        _ = restore.onMessage(self.answer(.switchOver, from: F.peers[0]), now: .ms(9))
        let resume = restore.onTick(now: .ms(31_000))
        #expect(self.requested(resume).map(\.0) == [.resume, .resume])
        _ = restore.onMessage(self.answer(.resume, from: F.peers[0]), now: .ms(31_001))
        let done = restore.onMessage(self.answer(.resume, from: F.peers[1]), now: .ms(31_002))
        #expect(
            done.last
                == .failed(
                    .switchOver,
                    "no answer in step switchOver from \(F.peers[1]); the VMs that switched over were resumed"
                )
        )
    }

    @Test func test_aHolderFailsInResume_pastTheSwitchOver_failsWithoutARollback() {
        var restore = self.restore(at: .resume)
        let failed = restore.onMessage(
            self.answer(.resume, from: F.peers[0], ok: false, reason: "h1: cont"),
            now: .ms(9)
        )
        #expect(failed == [.failed(.resume, "h1: cont")])
    }

    @Test func test_aRollbackAnswerThatCouldNotPutAVMBack_isNamedInTheFailure() {
        var restore = self.restore(at: .load)
        _ = restore.onMessage(self.answer(.load, from: F.peers[0], ok: false, reason: "h1: no room"), now: .ms(9))
        _ = restore.onMessage(self.answer(.rollback, from: F.peers[0]), now: .ms(10))
        let failed = restore.onMessage(
            self.answer(.rollback, from: F.peers[1], ok: false, reason: "h2: relay: cont failed"),
            now: .ms(11)
        )
        #expect(failed == [.failed(.load, "h1: no room; rollback incomplete: h2: relay: cont failed")])
    }

    /// A restore that moves VMs, driven to the end of its pause step.
    func pausedMovingVMs() -> Coordinator {
        var restore = Coordinator(
            key: F.key,
            run: 5,
            me: F.initiator,
            holders: Set(F.peers),
            moved: ["relay": F.peers[0]],
            recordsOwners: true,
            now: .zero
        )
        _ = restore.start()
        for step in [RestoreStep.verify, .load] {
            for peer in F.peers { _ = restore.onMessage(self.answer(step, from: peer), now: .ms(1)) }
        }
        _ = restore.onMessage(self.answer(.pause, from: F.peers[0]), now: .ms(2))
        let paused = restore.onMessage(self.answer(.pause, from: F.peers[1]), now: .ms(3))
        #expect(paused == [.stepDone(.pause, [F.peers[0]: [3], F.peers[1]: [3]]), .recordOwners])
        return restore
    }

    @Test func test_aRestoreMovingVMs_waitsAfterThePauseForTheNewOwners_andSwitchesOverOnceTheyAreRecorded() {
        var restore = self.pausedMovingVMs()
        #expect(restore.awaitingOwners)
        #expect(restore.onMessage(self.answer(.pause, from: F.peers[0]), now: .ms(4)).isEmpty, "a late duplicate")
        #expect(restore.onTick(now: .ms(1_000)).isEmpty, "nothing is resent while the initiator records")
        let switchOver = restore.ownersRecorded(now: .ms(1_001))
        #expect(self.requested(switchOver).map(\.0) == [.switchOver, .switchOver])
        #expect(restore.ownersRecorded(now: .ms(1_002)).isEmpty, "once")
    }

    @Test func test_newOwnersNotRecorded_orNotAnsweredInTime_rollEveryHolderBack_sayingWhy() {
        var refused = self.pausedMovingVMs()
        let rollback = refused.ownersRefused("no initiator", now: .ms(10))
        #expect(self.requested(rollback).map(\.0) == [.rollback, .rollback])
        _ = refused.onMessage(self.answer(.rollback, from: F.peers[0]), now: .ms(11))
        let failed = refused.onMessage(self.answer(.rollback, from: F.peers[1]), now: .ms(12))
        guard case .failed(.pause, let reason) = failed.first else {
            Issue.record("not failed: \(failed)")
            return
        }
        #expect(reason.contains("the new owners of the moved VMs were not recorded: no initiator"), "\(reason)")
        #expect(reason.contains("rolled back: every VM runs as it did before the restore"), "\(reason)")

        var silent = self.pausedMovingVMs()
        #expect(silent.onTick(now: .ms(29_000)).isEmpty)
        #expect(self.requested(silent.onTick(now: .ms(30_004))).map(\.0) == [.rollback, .rollback])
    }

    @Test func test_aHolderDiesInLoad_theOthersRollBackAtOnce_andTheFailureSaysItDied() {
        var restore = self.coordinator()
        _ = restore.start()
        _ = restore.onMessage(self.answer(.verify, from: F.peers[0]), now: .ms(1))
        _ = restore.onMessage(self.answer(.verify, from: F.peers[1]), now: .ms(2))
        #expect(restore.step == .load)
        // Long before the load's deadline: the dead holder is not waited for, and not asked to roll back.
        let rollback = restore.holderDown(F.peers[1], now: .ms(3))
        #expect(self.requested(rollback).map(\.0) == [.rollback])
        #expect(self.requested(rollback).map(\.1) == [F.peers[0]])
        let failed = restore.onMessage(self.answer(.rollback, from: F.peers[0]), now: .ms(4))
        guard case .failed(.load, let reason) = failed.last else {
            Issue.record("expected a failure in load: \(failed)")
            return
        }
        #expect(reason.contains("\(F.peers[1]) died or left"), "\(reason)")
        #expect(restore.step == nil && !restore.succeeded)
        // A late answer from the dead holder changes nothing.
        #expect(restore.onMessage(self.answer(.rollback, from: F.peers[1]), now: .ms(5)).isEmpty)
    }

    @Test func test_aHolderDiesInVerify_failsAtOnce_andOneDyingInSwitchOver_letsTheOthersResume() {
        var early = self.coordinator()
        _ = early.start()
        #expect(early.holderDown(F.peers[0], now: .ms(1)) == [.failed(.verify, "\(F.peers[0]) died or left")])
        // A stranger's death means nothing.
        var late = self.coordinator()
        _ = late.start()
        #expect(late.holderDown(PeerID(name: "stranger"), now: .ms(1)).isEmpty)
        for step in [RestoreStep.verify, .load, .pause] {
            _ = late.onMessage(self.answer(step, from: F.peers[0]), now: .ms(2))
            _ = late.onMessage(self.answer(step, from: F.peers[1]), now: .ms(2))
        }
        #expect(late.step == .switchOver)
        _ = late.onMessage(self.answer(.switchOver, from: F.peers[0]), now: .ms(3))
        let resume = late.holderDown(F.peers[1], now: .ms(4))
        #expect(self.requested(resume).map(\.1) == [F.peers[0]], "only the holder still there is resumed")
        let done = late.onMessage(self.answer(.resume, from: F.peers[0]), now: .ms(5))
        guard case .failed(.switchOver, let reason) = done.last else {
            Issue.record("expected the switch-over failure reported after the resume: \(done)")
            return
        }
        #expect(reason.contains("died or left"), "\(reason)")
    }
}
