import Testing
import VNSnapCore

/// The switch's per-VM epoch decisions around a cut, and channel drain counting.
@Suite struct EpochGateTests {
    @Test func test_unarmed_everyFrameIsDelivered_whateverItsEpoch() {
        var gate = EpochGate(epoch: 3)
        for epoch: UInt32 in [0, 2, 3, 4, 9] { #expect(gate.inbound(frameEpoch: epoch) == .deliver) }
    }

    @Test func test_triggerBeforeMarker_holdsAndCuts_thenReleasedFramesAreDeliveredAndOldOnesRecorded() {
        var gate = EpochGate(epoch: 0)
        #expect(step(&gate) { $0.arm(to: 1, policy: .trigger) })
        #expect(gate.inbound(frameEpoch: 0) == .deliver, "old-epoch frames flow until the cut")
        #expect(gate.inbound(frameEpoch: 1) == .holdAndTriggerCut)
        #expect(gate.inbound(frameEpoch: 0) == .hold, "everything waits while the VM is being cut")
        #expect(gate.inbound(frameEpoch: 1) == .hold)
        gate.finishCut()
        #expect(gate.epoch == 1)
        // Until the held frames are out, new ones queue behind them.
        #expect(gate.inbound(frameEpoch: 1) == .hold)
        #expect(gate.released(frameEpoch: 1) == .deliver)
        #expect(gate.released(frameEpoch: 0) == .deliverAndRecord)
        #expect(gate.released(frameEpoch: 1) == .deliver)
        #expect(gate.released(frameEpoch: 1) == .deliver)
        #expect(gate.held == 0)
        // In flight from a sender not cut yet: channel state.
        #expect(gate.inbound(frameEpoch: 0) == .deliverAndRecord)
        gate.stopRecording()
        #expect(gate.inbound(frameEpoch: 0) == .deliver)
        #expect(gate.counters == .init(held: 4, dropped: 0, recorded: 2, triggered: true))
    }

    @Test func test_markerCut_holdsDuringThePause_notTriggered() {
        var gate = EpochGate(epoch: 4)
        #expect(step(&gate) { $0.arm(to: 5, policy: .trigger) })
        gate.beginCut()
        #expect(gate.inbound(frameEpoch: 4) == .hold)
        gate.finishCut()
        #expect(gate.released(frameEpoch: 4) == .deliverAndRecord)
        #expect(!gate.counters.triggered)
    }

    @Test func test_dropPolicy_dropsNewEpochFramesBeforeTheCut_likeVNsnap() {
        var gate = EpochGate(epoch: 0)
        #expect(step(&gate) { $0.arm(to: 1, policy: .drop) })
        #expect(gate.inbound(frameEpoch: 1) == .drop(.newEpochBeforeCut))
        #expect(gate.inbound(frameEpoch: 0) == .deliver)
        #expect(!gate.cutting)
        #expect(gate.counters.dropped == 1)
    }

    @Test func test_holdQueue_isBounded_excessIsDroppedAndCounted() {
        var gate = EpochGate(epoch: 0, holdLimit: 2)
        #expect(step(&gate) { $0.arm(to: 1, policy: .trigger) })
        #expect(gate.inbound(frameEpoch: 1) == .holdAndTriggerCut)
        #expect(gate.inbound(frameEpoch: 1) == .hold)
        #expect(gate.inbound(frameEpoch: 1) == .drop(.holdFull))
        #expect(gate.counters.dropped == 1)
    }

    @Test func test_abortBeforeTheCut_disarms_newEpochFramesFlowAgain() {
        var gate = EpochGate(epoch: 0)
        #expect(step(&gate) { $0.arm(to: 1, policy: .trigger) })
        gate.disarm()
        #expect(gate.inbound(frameEpoch: 1) == .deliver)
        #expect(gate.epoch == 0)
    }

    @Test func test_arm_targetsTheSnapshotsEpoch_afterAnAbortLeftVMsApart() {
        // An aborted snapshot cut A (now at 1) but not B (at 0): the next snapshot moves both to 2.
        var a = EpochGate(epoch: 1)
        var b = EpochGate(epoch: 0)
        #expect(step(&a) { $0.arm(to: 2, policy: .trigger) })
        #expect(step(&b) { $0.arm(to: 2, policy: .trigger) })
        #expect(a.inbound(frameEpoch: 1) == .deliver, "B's old-epoch frame does not trigger A")
        #expect(b.inbound(frameEpoch: 2) == .holdAndTriggerCut)
        var stale = EpochGate(epoch: 2)
        #expect(!step(&stale) { $0.arm(to: 2, policy: .trigger) }, "a snapshot must move the VM forward")
    }

    @Test func test_cancelledCut_staysInTheOldEpoch_andReleasesHeldFramesUnrecorded() {
        var gate = EpochGate(epoch: 0)
        #expect(step(&gate) { $0.arm(to: 1, policy: .trigger) })
        #expect(gate.inbound(frameEpoch: 1) == .holdAndTriggerCut)
        gate.cancelCut()
        #expect(gate.epoch == 0)
        #expect(gate.released(frameEpoch: 1) == .deliver)
        gate.disarm()
        #expect(gate.inbound(frameEpoch: 1) == .deliver)
    }

    @Test func test_channelDrain_drainedOnlyWhenEverySenderAnnouncedAndAllArrived() {
        let a = PeerID(name: "a")
        let b = PeerID(name: "b")
        var drain = ChannelDrain(senders: [a, b])
        drain.oldEpochFrame(from: a)
        drain.endOfEpoch(from: a, sent: 2)
        #expect(!drain.isDrained)
        drain.oldEpochFrame(from: a)
        drain.endOfEpoch(from: b, sent: 0)
        #expect(drain.isDrained)
        var lossy = ChannelDrain(senders: [a])
        lossy.endOfEpoch(from: a, sent: 5)
        lossy.oldEpochFrame(from: a)
        #expect(!lossy.isDrained)
        #expect(lossy.missing == [a: 4])
    }

    @Test func test_channelDrain_countsFromWhatWasReceivedBeforeArming_andStartsOverWhenTheSenderRestarts() {
        let a = PeerID(name: "a")
        // 100 old-epoch frames arrived before this peer armed; the marker counts the whole session.
        var drain = ChannelDrain(senders: [a], received: [a: 100, PeerID(name: "stranger"): 7])
        #expect(drain.received == [a: 100], "only senders are counted")
        drain.endOfEpoch(from: a, sent: 102)
        drain.oldEpochFrame(from: a)
        #expect(!drain.isDrained)
        drain.oldEpochFrame(from: a)
        #expect(drain.isDrained)
        // A restarted sender's session counts from zero, as its next marker will.
        drain.senderRestarted(a)
        drain.endOfEpoch(from: a, sent: 1)
        #expect(!drain.isDrained)
        drain.oldEpochFrame(from: a)
        #expect(drain.isDrained)
    }
}

/// The end-of-epoch marker's payload.
@Suite struct EndOfEpochMarkerTests {
    @Test func test_marker_roundTripsThroughHeaderAndPayload_andRefusesOtherShapes() {
        let marker = EndOfEpochMarker(vni: VNI(42)!, epoch: 3, frames: 1_234_567_890_123)
        let header = TunnelHeader(
            kind: .endOfEpoch,
            vni: marker.vni,
            source: PeerID(name: "a"),
            destination: PeerID(name: "b"),
            session: 1,
            epoch: marker.epoch,
            keyID: 0,
            sequence: 9
        )
        #expect(EndOfEpochMarker(header: header, payload: marker.payload) == marker)
        #expect(EndOfEpochMarker(header: header, payload: Array(marker.payload.dropLast())) == nil)
        var frame = header
        frame.kind = .frame
        #expect(EndOfEpochMarker(header: frame, payload: marker.payload) == nil)
        var zero = header
        zero.epoch = 0
        #expect(EndOfEpochMarker(header: zero, payload: marker.payload) == nil, "epoch 0 has no predecessor")
    }
}
