import Foundation
import Testing
import VNSnapCore
import VNSnapPeer

/// Semantic correctness, as in the VNsnap paper, on real guests across two real peers: the pipeline with
/// snapshots taken mid-stream still ends right, and every run restored from one of them ends right too.
@Suite(.serialized) struct SnapshotLiveTests {
    static let blocks = 3000

    @Test(arguments: [SnapshotMode.cow, .precopy])
    func test_pipeline_threeSnapshotsMidStream_liveRunAndEveryRestoredRunEndWithTheExpectedDigest(mode: SnapshotMode)
        async throws
    {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let expected = try LiveEnvironment.expectedDigest(blocks: Self.blocks)
        let cluster = try LiveCluster(hosts: ["h1", "h2"])
        do {
            let configs = PipelineLiveTests.pipelineConfigs(cluster, blocks: Self.blocks, pace: 2)
            try cluster.startPeer("h1", config: configs["h1"]!)
            try cluster.startPeer("h2", config: configs["h2"]!)
            // Three snapshots at different points of the live stream, asked from either host.
            var manifests: [SnapshotManifest] = []
            for (index, fraction) in [0.2, 0.45, 0.7].enumerated() {
                try await cluster.waitForSerialNumber(
                    host: "h1",
                    vm: "sink",
                    after: "VNSNAP progress blocks=",
                    atLeast: Int(Double(Self.blocks) * fraction),
                    timeout: .seconds(180)
                )
                let manifest = try await cluster.snapshot(
                    index == 1 ? "h2" : "h1",
                    violin: "pipeline",
                    mode: mode,
                    name: "at-\(fraction)"
                )
                #expect(manifest.vms.map(\.name) == ["relay", "sink", "source"])
                #expect(manifest.mode == mode)
                #expect(manifest.vms.allSatisfy { $0.image.chunkCount > 0 && $0.measurements.downtime > 0 })
                manifests.append(manifest)
            }
            #expect(Set(manifests.map(\.epoch)).count == 3, "each snapshot moves the VIOLIN to a new epoch")
            let live = try await cluster.waitForSerial(
                host: "h1",
                vm: "sink",
                containing: "verdict=",
                timeout: .seconds(180)
            )
            #expect(live.contains("verdict=ok") && live.contains("digest=\(expected)"), "live run: \(live)")
            #expect(Set(try await cluster.list("h1").map(\.id)) == Set(manifests.map(\.id)))
            #expect(Set(try await cluster.list("h2").map(\.id)) == Set(manifests.map(\.id)))

            for manifest in manifests {
                try await cluster.restore(manifest == manifests[1] ? "h1" : "h2", id: manifest.id)
                // The restored VMs are new QEMU processes: their serial logs start over from the cut.
                let restored = try await cluster.waitForSerial(
                    host: "h1",
                    vm: "sink",
                    containing: "verdict=",
                    timeout: .seconds(180)
                )
                #expect(
                    restored.contains("verdict=ok") && restored.contains("digest=\(expected)"),
                    "run restored from \(manifest.name): \(restored)"
                )
            }
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }

    /// A UDP workload whose correctness depends on the frames in flight at the cut: restored with the channel
    /// log replayed it is complete; restored without, it misses exactly those datagrams.
    @Test func test_udpStream_restoredWithChannelReplay_isComplete_withoutReplay_missesTheFramesInFlight() async throws
    {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let cluster = try LiveCluster(hosts: ["h1", "h2"])
        do {
            let violins = "\n[[violins]]\nname = \"udp\"\nvni = 43\n"
            // Long enough (~30 s at 1 ms per datagram) that every attempt below catches the stream running.
            let count = 30_000
            // One datagram per millisecond: the source's last old-epoch datagrams, sent while the sink is already
            // being cut, are in flight toward it at most cuts.
            try cluster.startPeer(
                "h2",
                config: cluster.baseConfig("h2") + violins
                    + LiveCluster.guestVM(
                        name: "udpsource",
                        violin: "udp",
                        mac: "52:54:00:00:01:01",
                        append:
                            "vnsnap.role=udpsource vnsnap.ip=10.10.1.1/24 vnsnap.to=10.10.1.2:6000 vnsnap.count=\(count) vnsnap.pace=1"
                    )
            )
            try cluster.startPeer(
                "h1",
                config: cluster.baseConfig("h1") + violins
                    + LiveCluster.guestVM(
                        name: "udpsink",
                        violin: "udp",
                        mac: "52:54:00:00:01:02",
                        append: "vnsnap.role=udpsink vnsnap.ip=10.10.1.2/24 vnsnap.listen=6000"
                    )
            )
            // A cut catches datagrams in flight only sometimes: take snapshots until one recorded some.
            var chosen: SnapshotManifest?
            for attempt in 1...6 {
                try await cluster.waitForSerialNumber(
                    host: "h1",
                    vm: "udpsink",
                    after: "VNSNAP udp got=",
                    atLeast: 1000 * attempt,
                    timeout: .seconds(180)
                )
                let manifest = try await cluster.snapshot("h1", violin: "udp", mode: .cow, name: "udp-\(attempt)")
                if (manifest.channels.first { $0.vm == "udpsink" }?.frames ?? 0) > 0 {
                    chosen = manifest
                    break
                }
            }
            let live = try await cluster.waitForSerial(
                host: "h1",
                vm: "udpsink",
                containing: "verdict=",
                timeout: .seconds(180)
            )
            #expect(live.contains("verdict=ok"), "live run: \(live)")
            guard let manifest = chosen else {
                Issue.record("no snapshot of six caught a datagram in flight; the replay could not be shown")
                await cluster.teardown()
                return
            }
            let inFlight = manifest.channels.first { $0.vm == "udpsink" }!.frames
            try await cluster.restore("h2", id: manifest.id, replay: true)
            let replayed = try await cluster.waitForSerial(
                host: "h1",
                vm: "udpsink",
                containing: "verdict=",
                timeout: .seconds(180)
            )
            #expect(replayed.contains("verdict=ok"), "restored with replay (\(inFlight) frames in flight): \(replayed)")
            try await cluster.restore("h2", id: manifest.id, replay: false)
            let lost = try await cluster.waitForSerial(
                host: "h1",
                vm: "udpsink",
                containing: "verdict=",
                timeout: .seconds(180)
            )
            #expect(
                lost.contains("verdict=bad") && !lost.contains("missing=0 "),
                "restored without replay (\(inFlight) frames in flight): \(lost)"
            )
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }
}
