import Foundation
import Synchronization
import Testing
import VNSnapCore
import VNSnapPeer

/// The switch's part of a snapshot on two real switches (loopback UDP, stand-in NICs): frames held during a
/// cut, old-epoch frames recorded as channel state, end-of-epoch markers closing the channels, and triggers.
@Suite(.serialized) struct SwitchEpochTests {
    static let a1 = SwitchServiceTests.a1, a2 = SwitchServiceTests.a2

    /// Both NICs learned by each switch (one frame each way).
    func learn(_ net: TwoSwitches) async throws {
        try await net.nics["a1"]!.send(
            ethernetFrame(to: "ff:ff:ff:ff:ff:ff", from: Self.a1, payload: "hi"),
            to: net.switchSocket("a1")
        )
        #expect(await eventually { net.nics["a2"]!.frames.count == 1 })
        try await net.nics["a2"]!.send(
            ethernetFrame(to: Self.a1, from: Self.a2, payload: "hi back"),
            to: net.switchSocket("a2")
        )
        #expect(await eventually { net.nics["a1"]!.frames.count == 1 })
    }

    @Test func test_oldEpochFrameHeldDuringTheCut_isRecorded_evenWhenTheChannelDrainsBeforeItIsReleased() async throws {
        let net = try TwoSwitches()
        do {
            try await net.start()
            try await self.learn(net)
            let (h1, h2) = (net.switches["h1"]!, net.switches["h2"]!)
            #expect(try await h1.arm(vms: ["a1"], epoch: 1, policy: .trigger, senders: [PeerID(name: "h2")]).isEmpty)
            #expect(try await h2.arm(vms: ["a2"], epoch: 1, policy: .trigger, senders: [PeerID(name: "h1")]).isEmpty)
            // a2's cut begins: a1's next frame (still epoch 0) is held, not delivered.
            try await h2.beginCut("a2")
            try await net.nics["a1"]!.send(
                ethernetFrame(to: Self.a2, from: Self.a1, payload: "in flight"),
                to: net.switchSocket("a1")
            )
            try await Task.sleep(for: .milliseconds(100))
            #expect(net.nics["a2"]!.frames.count == 1, "held during the cut")
            try await h2.finishCut("a2")
            // a1 is cut too: h1's marker announces its 2 old-epoch frames, and h2 has received both: drained,
            // while the second is still held.
            try await h1.beginCut("a1")
            try await h1.finishCut("a1")
            #expect(await eventually { (try? await h2.isDrained("a2")) == true })
            try await h2.releaseHeld("a2")
            #expect(await eventually { net.nics["a2"]!.frames.count == 2 })
            let report = try #require(try await h2.snapshotReport("a2"))
            #expect(report.log.map { String(decoding: $0[14...], as: UTF8.self) } == ["in flight"])
            #expect(report.counters.recorded == 1 && report.counters.held == 1)
            #expect(report.drained)
            // After the drain nothing more is recorded: a new frame of the old epoch cannot exist any more,
            // and a1's frames now carry epoch 1.
            try await net.nics["a1"]!.send(
                ethernetFrame(to: Self.a2, from: Self.a1, payload: "after"),
                to: net.switchSocket("a1")
            )
            #expect(await eventually { net.nics["a2"]!.frames.count == 3 })
            #expect(try await h2.epochs()["a2"] == 1)
            try await h1.endSnapshot(vms: ["a1"])
            try await h2.endSnapshot(vms: ["a2"])
        } catch {
            Issue.record("\(error)")
        }
        await net.stop()
    }

    @Test func test_newEpochFrameForAVMNotCutYet_triggersItsCut_andWaitsForIt_thenIsDeliveredUnrecorded() async throws {
        let net = try TwoSwitches()
        do {
            try await net.start()
            try await self.learn(net)
            let (h1, h2) = (net.switches["h1"]!, net.switches["h2"]!)
            let triggered = TriggeredVMs()
            try await h2.onTrigger { vm in triggered.names.withLock { $0.append(vm) } }
            _ = try await h1.arm(vms: ["a1"], epoch: 1, policy: .trigger, senders: [PeerID(name: "h2")])
            _ = try await h2.arm(vms: ["a2"], epoch: 1, policy: .trigger, senders: [PeerID(name: "h1")])
            try await h1.beginCut("a1")
            try await h1.finishCut("a1")
            try await net.nics["a1"]!.send(
                ethernetFrame(to: Self.a2, from: Self.a1, payload: "new epoch"),
                to: net.switchSocket("a1")
            )
            #expect(await eventually { triggered.names.withLock { $0 } == ["a2"] })
            #expect(net.nics["a2"]!.frames.count == 1, "held until a2 is cut")
            try await h2.finishCut("a2")
            try await h2.releaseHeld("a2")
            #expect(await eventually { net.nics["a2"]!.frames.count == 2 })
            let report = try #require(try await h2.snapshotReport("a2"))
            #expect(report.counters.triggered && report.counters.recorded == 0 && report.log.isEmpty)
        } catch {
            Issue.record("\(error)")
        }
        await net.stop()
    }

    @Test func test_dropPolicy_dropsNewEpochFramesForAVMNotCutYet_andCountsThem() async throws {
        let net = try TwoSwitches()
        do {
            try await net.start()
            try await self.learn(net)
            let (h1, h2) = (net.switches["h1"]!, net.switches["h2"]!)
            _ = try await h1.arm(vms: ["a1"], epoch: 1, policy: .drop, senders: [PeerID(name: "h2")])
            _ = try await h2.arm(vms: ["a2"], epoch: 1, policy: .drop, senders: [PeerID(name: "h1")])
            try await h1.beginCut("a1")
            try await h1.finishCut("a1")
            try await net.nics["a1"]!.send(
                ethernetFrame(to: Self.a2, from: Self.a1, payload: "dropped"),
                to: net.switchSocket("a1")
            )
            #expect(await eventually { (try? await h2.snapshotReport("a2"))?.counters.dropped == 1 })
            #expect(net.nics["a2"]!.frames.count == 1)
            let status = try await h2.status()
            #expect(status.ports.first { $0.vm == "a2" }?.counters.drops[.epochPolicy] == 1)
        } catch {
            Issue.record("\(error)")
        }
        await net.stop()
    }

    @Test func test_stallMeasurementWithoutSnapshot_returnsTheLongestPayloadGap_butYieldsToASnapshotArmedMeanwhile()
        async throws
    {
        let net = try TwoSwitches()
        do {
            try await net.start()
            try await self.learn(net)
            let h2 = net.switches["h2"]!
            let payload = String(repeating: "x", count: 200)  // payload frames are those of 128 bytes or more
            try await h2.measure(vms: ["a2"], stallOnly: true)
            for count in 2...3 {
                try await net.nics["a1"]!.send(
                    ethernetFrame(to: Self.a2, from: Self.a1, payload: payload),
                    to: net.switchSocket("a1")
                )
                #expect(await eventually { net.nics["a2"]!.frames.count == count })
                // The gap the measurement must see: at least this pause between the two arrivals' sends.
                try await Task.sleep(for: .milliseconds(300))
            }
            let stall = try #require(try await h2.finishMeasure("a2"))
            #expect(stall >= 100_000_000 && stall < 10_000_000_000, "\(stall) ns")
            #expect(try await h2.finishMeasure("a2") == nil, "measured once")
            // A snapshot arming the port during a measurement owns it: the measurement gives nothing back and
            // leaves the snapshot's state alone, also once the cut is over and the gate disarmed.
            try await h2.measure(vms: ["a2"], stallOnly: true)
            _ = try await h2.arm(vms: ["a2"], epoch: 1, policy: .trigger, senders: [PeerID(name: "h1")])
            #expect(try await h2.finishMeasure("a2") == nil)
            try await h2.beginCut("a2")
            try await h2.finishCut("a2")
            try await h2.measure(vms: ["a2"], stallOnly: true)
            #expect(try await h2.finishMeasure("a2") == nil)
            #expect(try await h2.snapshotReport("a2") != nil)
        } catch {
            Issue.record("\(error)")
        }
        await net.stop()
    }
}

/// VMs a switch reported as triggered.
final class TriggeredVMs: Sendable {
    let names = Mutex<[String]>([])
}
