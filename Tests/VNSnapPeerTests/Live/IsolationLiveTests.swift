import Foundation
import Testing
import VNSnapCore
import VNSnapPeer

/// Two VIOLINs on the same two peers, with the very same guest IPs and MACs: if a single frame leaked
/// from one VNI to the other, ARP and TCP would mix the streams and a digest would be wrong.
@Suite(.serialized) struct IsolationLiveTests {
    @Test func test_twoVIOLINsWithIdenticalAddresses_shouldEachDeliverTheirOwnDigest() async throws {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let blocksA = 1500
        let blocksB = 2500
        let cluster = try LiveCluster(hosts: ["h1", "h2"])
        do {
            let a = PipelineLiveTests.pipelineConfigs(cluster, violin: "red", vni: 42, blocks: blocksA)
            let b = PipelineLiveTests.pipelineConfigs(cluster, violin: "blue", vni: 43, blocks: blocksB)
            // Merge: one base config, both VIOLINs, both sets of VMs (renamed, same MACs and IPs).
            func vmsOnly(_ text: String, prefix: String) -> String {
                let start = text.range(of: "\n[[vms]]")!.lowerBound
                return String(text[start...]).replacingOccurrences(of: "name = \"", with: "name = \"\(prefix)-")
                    .replacingOccurrences(of: "violin = \"\(prefix)-", with: "violin = \"")
            }
            for host in ["h1", "h2"] {
                let text =
                    cluster.baseConfig(host)
                    + "\n[[violins]]\nname = \"red\"\nvni = 42\n\n[[violins]]\nname = \"blue\"\nvni = 43\n"
                    + vmsOnly(a[host]!, prefix: "red") + vmsOnly(b[host]!, prefix: "blue")
                try cluster.startPeer(host, config: text)
            }
            let red = try await cluster.waitForSerial(
                host: "h1",
                vm: "red-sink",
                containing: "verdict=",
                timeout: .seconds(180)
            )
            let blue = try await cluster.waitForSerial(
                host: "h1",
                vm: "blue-sink",
                containing: "verdict=",
                timeout: .seconds(180)
            )
            let digestA = try LiveEnvironment.expectedDigest(blocks: blocksA)
            let digestB = try LiveEnvironment.expectedDigest(blocks: blocksB)
            #expect(red.contains("verdict=ok") && red.contains(digestA), "\(red)")
            #expect(blue.contains("verdict=ok") && blue.contains(digestB), "\(blue)")
            let h1 = try await cluster.status("h1")
            #expect(h1.switch.learned["red"] == 3, "\(h1.switch.learned)")
            #expect(h1.switch.learned["blue"] == 3, "\(h1.switch.learned)")
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }
}
