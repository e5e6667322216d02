import Foundation
import Testing
import VNSnapCore
import VNSnapPeer

/// The fence (issue 14): the sink's host, cut off by a partition with `fence_after_s` set, pauses its VM; the
/// majority restores the pipeline with the sink elsewhere (from its replicas); once the partition heals, the cut-off
/// host learns the sink moved and stops its copy, which never ran again; then `move` brings the sink back to h3
/// (generation 2; the copy on the majority side stops) and the run ends right there.
@Suite(.serialized) struct FenceLiveTests {
    static let blocks = 6_000

    @Test func test_cutOffHostWithAFence_pausesItsVM_andAfterARestoreElsewhereAndTheHeal_stopsItNeverResumed()
        async throws
    {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let expected = try LiveEnvironment.expectedDigest(blocks: Self.blocks)
        let cluster = try LiveCluster(hosts: ["h1", "h2", "h3"])
        do {
            var configs = try ViolinOperationsLiveTests.spreadPipeline(cluster, blocks: Self.blocks)
            let store = "[peer]\nroles = [\"vm\", \"store\"]\nstore_capacity_mib = 1024\n"
            for host in ["h1", "h2"] {
                configs[host] = configs[host]!.replacingOccurrences(of: "[peer]\n", with: store)
            }
            configs["h3"] = configs["h3"]!.replacingOccurrences(of: "[peer]\n", with: "[peer]\nfence_after_s = 4\n")
            try await ViolinOperationsLiveTests.startSpread(cluster, configs: configs)
            let manifest = try await cluster.snapshot(
                "h1",
                violin: "pipeline",
                mode: .cow,
                name: "before-the-cut",
                target: SnapshotTarget(kind: .memory, replicas: 2)
            )
            #expect(manifest.vms.first { $0.name == "sink" }?.replicas?.count == 2)
            let sinkPID = try #require(try await cluster.vmPIDs("h3")["sink"])

            // h3 is cut off: without a majority for 4 s, it pauses the sink.
            try MembershipLiveTests.partition(cluster, "h3", from: ["h1", "h2"])
            for host in ["h1", "h2"] { try MembershipLiveTests.partition(cluster, host, from: ["h3"]) }
            try await cluster.waitUntil("h3", timeout: .seconds(60), "fencing its VM") { status in
                status.vms.contains { $0.name == "sink" && $0.fenced == true && $0.runState == "paused" }
            }
            let serialLog = cluster.serialLog(host: "h3", vm: "sink")
            let fencedSize = try FileManager.default.attributesOfItem(atPath: serialLog)[.size] as? Int ?? -1

            // The majority restores the pipeline, the sink elsewhere from its replicas.
            try await cluster.waitUntil("h1", timeout: .seconds(60), "seeing h3 dead") {
                LiveCluster.states($0)["h3"] == "dead"
            }
            try await cluster.restore("h1", id: manifest.id)
            var sinkHost = ""
            for host in ["h1", "h2"]
            where try await cluster.status(host).vms.contains(where: {
                $0.name == "sink" && $0.state == "running"
            }) {
                sinkHost = host
            }
            #expect(!sinkHost.isEmpty, "the sink runs on neither h1 nor h2")

            // The partition heals: h3 learns the sink moved and stops its copy, which never ran again.
            try MembershipLiveTests.heal(cluster, "h3")
            for host in ["h1", "h2"] { try MembershipLiveTests.heal(cluster, host) }
            let healed = try await cluster.waitUntil("h3", timeout: .seconds(90), "stopping its moved copy") {
                $0.vms.contains { $0.name == "sink" && $0.state == "moved" }
            }
            #expect(healed.vms.first { $0.name == "sink" }?.movedTo == "moved to \(sinkHost) (generation 1)")
            for _ in 0..<50 where kill(sinkPID, 0) == 0 && !LiveCluster.isZombie(sinkPID) {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(kill(sinkPID, 0) != 0 || LiveCluster.isZombie(sinkPID), "the cut-off copy still runs")
            let finalSize = try FileManager.default.attributesOfItem(atPath: serialLog)[.size] as? Int ?? -2
            #expect(finalSize == fencedSize, "the fenced copy ran again (its serial log grew)")

            // The operator moves the sink back to h3 while the restored run streams: a new generation, the copy on
            // the majority side stops, and the run ends right on h3.
            let response = try await cluster.request(
                "h2",
                ControlRequest(command: "move", yes: true, on: ["sink": "h3"]),
                timeout: .seconds(600)
            )
            #expect(response.ok, "\(response.error ?? "")")
            #expect(try await cluster.status("h3").vms.first { $0.name == "sink" }?.state == "running")
            let left = try await cluster.status(sinkHost).vms.first { $0.name == "sink" }
            #expect(
                left?.state == "moved" && left?.movedTo == "moved to h3 (generation 2)",
                "\(String(describing: left))"
            )
            let run = try await cluster.verdict(host: "h3")
            #expect(run.contains("verdict=ok") && run.contains("digest=\(expected)"), "run after the move: \(run)")
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }
}
