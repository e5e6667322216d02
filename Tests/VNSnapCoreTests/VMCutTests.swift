import Testing
import VNSnapCore

/// The exact cut of one VM: hold, wait for QEMU's queue, stop, snapshot, drain, resume, release.
@Suite struct VMCutTests {
    typealias Cut = VMCut<TestInstant>

    @Test func test_steps_inOrder_drainWhileStopped_downtimeFromQEMUsEvents() {
        var cut = Cut(vm: "sink", triggered: true, now: .zero)
        #expect(cut.start() == [.holdInbound, .checkNICQueue(at: .zero)])
        #expect(cut.nicQueueChecked(empty: false, now: .ms(0)) == [.checkNICQueue(at: .ms(1))])
        #expect(cut.nicQueueChecked(empty: true, now: .ms(1)) == [.stopVM])
        #expect(cut.stopped(atNanoseconds: 1_000_000) == [.drainOutbound])
        // The drain happens before the snapshot can resume the VM; only then does the epoch advance.
        #expect(cut.outboundDrained() == [.advanceEpoch, .startSnapshot])
        #expect(cut.snapshotStarted().isEmpty, "held frames wait for RESUME")
        let done = cut.resumed(atNanoseconds: 7_500_000)
        #expect(
            done == [
                .releaseHeld,
                .finished(
                    VMCutReport(
                        vm: "sink",
                        cutAtNanoseconds: 1_000_000,
                        downtimeNanoseconds: 6_500_000,
                        triggered: true
                    )
                ),
            ]
        )
        #expect(!cut.queueWaitExpired)
    }

    @Test func test_resumeBeforeTheSnapshotCommandAnswers_finishesWhenItDoes() {
        var cut = Cut(vm: "a", triggered: false, now: .zero)
        _ = cut.nicQueueChecked(empty: true, now: .zero)
        _ = cut.stopped(atNanoseconds: 10)
        _ = cut.outboundDrained()
        #expect(cut.resumed(atNanoseconds: 15).isEmpty)
        let done = cut.snapshotStarted()
        #expect(done.first == .releaseHeld)
        #expect(cut.step == .done)
    }

    @Test func test_failureAfterTheStop_continuesTheVM_cancelsTheCut_releases() {
        var cut = Cut(vm: "relay", triggered: false, now: .zero)
        _ = cut.nicQueueChecked(empty: true, now: .zero)
        _ = cut.stopped(atNanoseconds: 10)
        _ = cut.outboundDrained()
        let failed = cut.fail("migrate: userfaultfd unavailable")
        #expect(failed == [.continueVM, .cancelCut, .releaseHeld, .failed("relay: migrate: userfaultfd unavailable")])
    }

    @Test func test_queueThatNeverEmpties_stopsAnywayAfterTheWait_andSaysSo() {
        var cut = Cut(vm: "a", triggered: false, queueWait: .milliseconds(5), now: .zero)
        var t = 0
        var directives = cut.nicQueueChecked(empty: false, now: .ms(t))
        while directives != [.stopVM], t < 100 {
            t += 1
            directives = cut.nicQueueChecked(empty: false, now: .ms(t))
        }
        #expect(t == 5)
        #expect(cut.queueWaitExpired)
    }

    @Test func test_failureBeforeTheStop_releasesTheHeldFrames_andNamesTheVM() {
        var cut = Cut(vm: "relay", triggered: false, now: .zero)
        _ = cut.nicQueueChecked(empty: true, now: .zero)
        let failed = cut.fail("QMP stop: VM not running")
        #expect(failed == [.cancelCut, .releaseHeld, .failed("relay: QMP stop: VM not running")])
        #expect(cut.stopped(atNanoseconds: 1).isEmpty)
        #expect(cut.fail("again").isEmpty)
    }
}
