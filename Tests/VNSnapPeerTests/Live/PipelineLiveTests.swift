import Foundation
import Testing
import VNSnapCore
import VNSnapPeer

/// The 3-VM TCP pipeline (source on h1 → relay on h2 → sink on h1) across two real peer processes in
/// two network namespaces, on one VIOLIN.
@Suite(.serialized) struct PipelineLiveTests {
    static let blocks = 2000

    static func pipelineConfigs(
        _ cluster: LiveCluster,
        violin: String = "pipeline",
        vni: Int = 42,
        blocks: Int = blocks,
        pace: Int = 0
    ) -> [String: String] {
        let violins = "\n[[violins]]\nname = \"\(violin)\"\nvni = \(vni)\n"
        let h1 =
            cluster.baseConfig("h1") + violins
            + LiveCluster.guestVM(
                name: "source",
                violin: violin,
                mac: "52:54:00:00:00:01",
                append:
                    "vnsnap.role=source vnsnap.ip=10.10.0.1/24 vnsnap.to=10.10.0.2:5000 vnsnap.blocks=\(blocks) vnsnap.pace=\(pace)"
            )
            + LiveCluster.guestVM(
                name: "sink",
                violin: violin,
                mac: "52:54:00:00:00:03",
                append: "vnsnap.role=sink vnsnap.ip=10.10.0.3/24 vnsnap.listen=5001 vnsnap.blocks=\(blocks)"
            )
        let h2 =
            cluster.baseConfig("h2") + violins
            + LiveCluster.guestVM(
                name: "relay",
                violin: violin,
                mac: "52:54:00:00:00:02",
                append: "vnsnap.role=relay vnsnap.ip=10.10.0.2/24 vnsnap.listen=5000 vnsnap.to=10.10.0.3:5001"
            )
        return ["h1": h1, "h2": h2]
    }

    @Test func test_pipelineAcrossTwoPeers_shouldDeliverExpectedDigest() async throws {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let expected = try LiveEnvironment.expectedDigest(blocks: Self.blocks)
        let cluster = try LiveCluster(hosts: ["h1", "h2"])
        do {
            let configs = Self.pipelineConfigs(cluster)
            try cluster.startPeer("h1", config: configs["h1"]!)
            try cluster.startPeer("h2", config: configs["h2"]!)
            let verdict = try await cluster.waitForSerial(
                host: "h1",
                vm: "sink",
                containing: "verdict=",
                timeout: .seconds(120)
            )
            #expect(verdict.contains("verdict=ok"), "\(verdict)")
            #expect(verdict.contains("digest=\(expected)"), "\(verdict)")

            let h1 = try await cluster.status("h1")
            let h2 = try await cluster.status("h2")
            #expect(h1.vms.map(\.state) == ["running", "running"])
            #expect(h2.vms.map(\.state) == ["running"])
            // The stream crossed the tunnels both ways (data one way, ACKs the other).
            let payload = UInt64(Self.blocks * 1024)
            #expect((h1.switch.tunnels.first?.counters.txBytes ?? 0) > payload)
            #expect((h1.switch.tunnels.first?.counters.rxBytes ?? 0) > payload)
            #expect((h2.switch.tunnels.first?.counters.rxBytes ?? 0) > payload)
            #expect(h1.switch.rejected.isEmpty, "\(h1.switch.rejected)")
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }
}
