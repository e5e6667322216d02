import Foundation
import Testing
import VNSnapCore
import VNSnapPeer

/// Hostile datagrams from a third host while the pipeline streams: all dropped and counted by reason,
/// the peer stays up, and the pipeline still ends with the right digest.
@Suite(.serialized) struct HostileTrafficLiveTests {
    @Test func test_pipeline_whenThirdHostInjectsWrongKeyAndGarbage_shouldCountDropsAndStillDeliverDigest() async throws
    {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let blocks = 4000
        let expected = try LiveEnvironment.expectedDigest(blocks: blocks)
        let cluster = try LiveCluster(hosts: ["h1", "h2"], bystanders: ["evil"])
        do {
            var configs = PipelineLiveTests.pipelineConfigs(cluster, blocks: blocks)
            // A paced source keeps the stream running while the injector works.
            configs["h1"] = configs["h1"]!.replacingOccurrences(
                of: "vnsnap.blocks=\(blocks)\"\n",
                with: "vnsnap.blocks=\(blocks) vnsnap.pace=2\"\n"
            )
            try cluster.startPeer("h1", config: configs["h1"]!)
            try cluster.startPeer("h2", config: configs["h2"]!)
            _ = try await cluster.waitForSerial(
                host: "h1",
                vm: "source",
                containing: "source connected",
                timeout: .seconds(90)
            )

            let target = "\(cluster.host("h2").address):7946"
            let inject: [(String, Int)] = [
                ("wrongkey", 2000), ("truncated", 3000), ("badversion", 7000), ("othercluster", 500),
            ]
            for (kind, count) in inject {
                try cluster.exec(
                    "evil",
                    [
                        LiveEnvironment.benchBinary, "inject", "--target", target, "--kind", kind, "--count",
                        "\(count)",
                        "--keyring", "\(cluster.root)/keyring", "--cluster", "someone-else",
                    ]
                )
            }
            let verdict = try await cluster.waitForSerial(
                host: "h1",
                vm: "sink",
                containing: "verdict=",
                timeout: .seconds(180)
            )
            #expect(verdict.contains("verdict=ok"), "\(verdict)")
            #expect(verdict.contains("digest=\(expected)"), "\(verdict)")

            let h2 = try await cluster.status("h2")
            #expect(h2.switch.rejected[.unknownKey] == 2000, "\(h2.switch.rejected)")
            #expect(h2.switch.rejected[.truncated] == 3000, "\(h2.switch.rejected)")
            #expect(h2.switch.rejected[.badVersion] == 7000, "\(h2.switch.rejected)")
            #expect(h2.switch.rejected[.badTag] == 500, "\(h2.switch.rejected)")
            #expect(h2.vms.map(\.state) == ["running"])
            // Nothing injected ever reached a VM port or the tunnel's accepted counters as a frame from evil.
            #expect(
                h2.switch.tunnels.first?.counters.drops.isEmpty ?? false,
                "\(String(describing: h2.switch.tunnels.first))"
            )
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }
}
