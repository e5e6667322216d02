import Testing
import VNSnapCore

/// A holder's side of restores: a step runs once however often it is asked, a rollback undoes exactly what was
/// loaded and paused, whatever step failed, a silent restorer is not waited for forever, and a deletion waits
/// for the restore using its snapshot.
@Suite struct RestoreHolderTests {
    typealias F = SnapshotFixtures
    typealias Holder = RestoreHolder<TestInstant>

    static let restorer = PeerID(name: "h3")

    func ok(_ step: RestoreStep, run: UInt64 = 5) -> SnapshotMessage.Body {
        .restoreAnswer(run: run, step: step, ok: true, reason: "", blob: [])
    }

    func failed(_ step: RestoreStep, run: UInt64 = 5) -> SnapshotMessage.Body {
        .restoreAnswer(run: run, step: step, ok: false, reason: "h1: relay: image unreadable", blob: [])
    }

    func sent(_ body: SnapshotMessage.Body) -> Holder.Action {
        .send(SnapshotMessage(key: F.key, from: F.peers[0], body: body), to: Self.restorer)
    }

    func ask(_ holder: inout Holder, _ step: RestoreStep, at ms: Int) -> [Holder.Action] {
        holder.onRequest(run: 5, step: step, key: F.key, from: Self.restorer, now: .ms(ms))
    }

    /// A holder that loaded `relay` and `sink` and, if `paused`, paused them.
    func loaded(paused: Bool) -> Holder {
        var holder = Holder(me: F.peers[0])
        for (index, step) in [RestoreStep.verify, .load, .pause].prefix(paused ? 3 : 2).enumerated() {
            #expect(self.ask(&holder, step, at: index * 10) == [.carryOut(run: 5, step: step)])
            _ = holder.stepFinished(
                run: 5,
                step: step,
                body: self.ok(step),
                staged: step == .load ? ["relay", "sink"] : [],
                paused: step == .pause ? ["relay", "sink"] : [],
                now: .ms(index * 10 + 5)
            )
        }
        return holder
    }

    @Test func test_aStepAskedAgainWhileItRuns_runsOnce_andAskedAfterwards_getsTheSameAnswer() {
        var holder = Holder(me: F.peers[0])
        #expect(self.ask(&holder, .verify, at: 0) == [.carryOut(run: 5, step: .verify)])
        #expect(self.ask(&holder, .verify, at: 300).isEmpty, "already running")
        #expect(
            step(&holder) { $0.stepFinished(run: 5, step: .verify, body: self.ok(.verify), now: .ms(400)) } == [
                self.sent(self.ok(.verify))
            ]
        )
        #expect(self.ask(&holder, .verify, at: 600) == [self.sent(self.ok(.verify))])
    }

    @Test(arguments: [RestoreStep.load, .pause])
    func test_aRollbackAfterAStepFailedHalfWay_undoesExactlyWhatWasLoadedAndPaused(failing: RestoreStep) {
        var holder = self.loaded(paused: false)
        if failing == .pause {
            // `relay` paused, then pausing `sink` failed.
            _ = self.ask(&holder, .pause, at: 30)
            _ = holder.stepFinished(run: 5, step: .pause, body: self.failed(.pause), paused: ["relay"], now: .ms(35))
        }
        let rollback = self.ask(&holder, .rollback, at: 40)
        #expect(
            rollback == [.rollBack(run: 5, discard: ["relay", "sink"], resume: failing == .pause ? ["relay"] : [])]
        )
        #expect(self.ask(&holder, .rollback, at: 41).isEmpty, "once")
        let done = holder.rolledBack(run: 5, problems: [], now: .ms(50))
        #expect(done == [self.sent(self.ok(.rollback))])
        #expect(holder.staged(5).isEmpty)
        #expect(
            self.ask(&holder, .switchOver, at: 60)
                == [
                    self.sent(
                        .restoreAnswer(
                            run: 5,
                            step: .switchOver,
                            ok: false,
                            reason: "restore 5 was rolled back here",
                            blob: []
                        )
                    )
                ],
            "a late switch-over never happens after a rollback"
        )
    }

    @Test func test_aRollbackAskedWhileTheLoadStillRuns_startsWhenTheLoadEnds_andIncludesWhatItLoaded() {
        var holder = Holder(me: F.peers[0])
        _ = self.ask(&holder, .verify, at: 0)
        _ = holder.stepFinished(run: 5, step: .verify, body: self.ok(.verify), now: .ms(1))
        _ = self.ask(&holder, .load, at: 2)
        #expect(self.ask(&holder, .rollback, at: 3).isEmpty, "waits for the load")
        let actions = holder.stepFinished(run: 5, step: .load, body: self.ok(.load), staged: ["relay"], now: .ms(9))
        #expect(actions == [self.sent(self.ok(.load)), .rollBack(run: 5, discard: ["relay"], resume: [])])
    }

    @Test func test_aRollbackAskedBeforeALoadArrives_refusesTheLateLoad_andDiscardsNothing() {
        var holder = Holder(me: F.peers[0])
        #expect(self.ask(&holder, .rollback, at: 0) == [.rollBack(run: 5, discard: [], resume: [])])
        _ = holder.rolledBack(run: 5, problems: [], now: .ms(1))
        guard case .send(let message, _) = self.ask(&holder, .load, at: 2).first,
            case .restoreAnswer(_, .load, false, _, _) = message.body
        else {
            Issue.record("a load arriving after the rollback must be refused")
            return
        }
    }

    @Test func test_aSilentRestorerWithVMsPaused_isRolledBackAfterTheSilence_andTheAnswerWaitsForItsAsk() {
        var holder = self.loaded(paused: true)
        #expect(step(&holder) { $0.onTick(now: .ms(20_000)) }.isEmpty, "heard at 20 ms: not yet 20 s")
        #expect(
            step(&holder) { $0.onTick(now: .ms(20_100)) } == [
                .rollBack(run: 5, discard: ["relay", "sink"], resume: ["relay", "sink"])
            ]
        )
        #expect(step(&holder) { $0.onTick(now: .ms(30_000)) }.isEmpty, "once")
        #expect(step(&holder) { $0.rolledBack(run: 5, problems: [], now: .ms(30_001)) }.isEmpty, "nobody asked")
        #expect(self.ask(&holder, .rollback, at: 31_000) == [self.sent(self.ok(.rollback))])
    }

    @Test func test_vMsOnlyLoaded_waitLongerForASilentRestorer_andASwitchedOverRestoreIsNeverRolledBack() {
        var holder = self.loaded(paused: false)
        #expect(step(&holder) { $0.onTick(now: .ms(60_000)) }.isEmpty)
        #expect(step(&holder) { $0.onTick(now: .ms(120_100)) }.count == 1)
        var switched = self.loaded(paused: true)
        _ = self.ask(&switched, .switchOver, at: 40)
        _ = switched.stepFinished(run: 5, step: .switchOver, body: self.failed(.switchOver), now: .ms(50))
        _ = self.ask(&switched, .resume, at: 60)
        _ = switched.stepFinished(run: 5, step: .resume, body: self.ok(.resume), now: .ms(70))
        #expect(step(&switched) { $0.onTick(now: .ms(600_000)) }.isEmpty, "past the switch-over, even a failed one")
        #expect(switched.staged(5).isEmpty)
    }

    @Test func test_aResumeAskedWhileTheSwitchOverStillRuns_waits_andASilentRestorerAfterIt_isResumedHere() {
        var holder = self.loaded(paused: true)
        #expect(self.ask(&holder, .switchOver, at: 40) == [.carryOut(run: 5, step: .switchOver)])
        #expect(self.ask(&holder, .resume, at: 45).isEmpty, "waits for this holder's own switch-over")
        _ = holder.stepFinished(run: 5, step: .switchOver, body: self.ok(.switchOver), now: .ms(50))
        #expect(holder.inUse(F.key.id), "switched over, not yet resumed")
        #expect(step(&holder) { $0.onTick(now: .ms(20_000)) }.isEmpty, "heard at 45 ms: not yet 20 s")
        #expect(step(&holder) { $0.onTick(now: .ms(20_100)) } == [.carryOut(run: 5, step: .resume)])
        #expect(step(&holder) { $0.onTick(now: .ms(40_000)) }.isEmpty, "once")
        #expect(
            step(&holder) { $0.stepFinished(run: 5, step: .resume, body: self.ok(.resume), now: .ms(40_001)) }
                .isEmpty,
            "nobody asked"
        )
        #expect(!holder.inUse(F.key.id))
        #expect(self.ask(&holder, .resume, at: 41_000) == [self.sent(self.ok(.resume))])
    }

    @Test func test_aDeleteDuringARestore_isDeferred_andDoneWhenTheRestoreSettles() {
        var holder = self.loaded(paused: true)
        #expect(holder.inUse(F.key.id))
        #expect(!step(&holder) { $0.deleteAsked(F.key.id) }, "deferred")
        #expect(step(&holder) { $0.deleteAsked(99) }, "another snapshot goes at once")
        _ = self.ask(&holder, .switchOver, at: 40)
        let switched = holder.stepFinished(run: 5, step: .switchOver, body: self.ok(.switchOver), now: .ms(50))
        #expect(switched == [self.sent(self.ok(.switchOver))], "still in use until resumed")
        _ = self.ask(&holder, .resume, at: 60)
        let actions = holder.stepFinished(run: 5, step: .resume, body: self.ok(.resume), now: .ms(70))
        #expect(actions == [self.sent(self.ok(.resume)), .delete([F.key.id])])
        #expect(!holder.inUse(F.key.id))
    }
}
