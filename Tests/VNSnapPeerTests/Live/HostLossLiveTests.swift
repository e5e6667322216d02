import Foundation
import Testing
import VNSnapCore
import VNSnapPeer

/// A snapshot to memory survives the loss of a host (DESIGN §7): four peers, the pipeline's VMs on h1, h2 and h3,
/// stores on h2 and h4. After the commit, h2 is killed with its VM; the restore, asked on a survivor, runs the
/// relay on another `vm` peer from its replica on h4, and the restored pipeline ends with the expected digest.
/// Then h2 comes back with its config (issue 14): it learns that the relay moved and leaves its copy stopped,
/// `status` says where it runs, one VM per MAC runs on the VIOLIN, and a restore of the snapshot taken while the
/// relay ran on h2 places it where it runs now.
@Suite(.serialized) struct HostLossLiveTests {
    static let blocks = 6_000

    static func configs(_ cluster: LiveCluster) -> [String: String] {
        let violins = "\n[[violins]]\nname = \"pipeline\"\nvni = 42\n"
        let blocks = Self.blocks
        func vm(_ name: String, mac: Int, _ append: String) -> String {
            LiveCluster.guestVM(name: name, violin: "pipeline", mac: "52:54:00:00:00:0\(mac)", append: append)
        }
        let store = { (roles: String) in "[peer]\nroles = [\(roles)]\nstore_capacity_mib = 1024\n" }
        return [
            "h1": cluster.baseConfig("h1") + violins
                + vm(
                    "source",
                    mac: 1,
                    "vnsnap.role=source vnsnap.ip=10.10.0.1/24 vnsnap.to=10.10.0.2:5000 vnsnap.blocks=\(blocks) vnsnap.pace=10"
                ),
            "h2": cluster.baseConfig("h2").replacingOccurrences(of: "[peer]\n", with: store("\"vm\", \"store\""))
                + violins
                + vm(
                    "relay",
                    mac: 2,
                    "vnsnap.role=relay vnsnap.ip=10.10.0.2/24 vnsnap.listen=5000 vnsnap.to=10.10.0.3:5001"
                ),
            "h3": cluster.baseConfig("h3") + violins
                + vm(
                    "sink",
                    mac: 3,
                    "vnsnap.role=sink vnsnap.ip=10.10.0.3/24 vnsnap.listen=5001 vnsnap.blocks=\(blocks)"
                ),
            "h4": cluster.baseConfig("h4").replacingOccurrences(of: "[peer]\n", with: store("\"store\"")) + violins,
        ]
    }

    @Test func test_hostKilledAfterACommit_restoreOnASurvivor_runsItsVMElsewhereFromItsReplica() async throws {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let expected = try LiveEnvironment.expectedDigest(blocks: Self.blocks)
        let cluster = try LiveCluster(hosts: ["h1", "h2", "h3", "h4"])
        do {
            let configs = Self.configs(cluster)
            for host in ["h4", "h3", "h2", "h1"] { try cluster.startPeer(host, config: configs[host]!) }
            try await cluster.waitForSerialNumber(
                host: "h3",
                vm: "sink",
                after: "VNSNAP progress blocks=",
                atLeast: 500,
                timeout: .seconds(180)
            )
            let manifest = try await cluster.snapshot(
                "h1",
                violin: "pipeline",
                mode: .cow,
                name: "survives-h2",
                target: SnapshotTarget(kind: .memory, replicas: 2)
            )
            let relay = try #require(manifest.vms.first { $0.name == "relay" })
            #expect(relay.replicas == ["h4", "h2"], "the relay's own host last: \(relay.replicas ?? [])")
            #expect(relay.definition?.mac.description == "52:54:00:00:00:02", "the manifest carries the definition")

            // h2 dies with its VM, as a host would: no goodbye.
            let relayPID = try #require(try await cluster.vmPIDs("h2")["relay"])
            let peerPID = try #require(cluster.host("h2").peerPID)
            kill(peerPID, SIGKILL)
            kill(relayPID, SIGKILL)
            try await cluster.waitUntil("h3", timeout: .seconds(60), "seeing h2 dead") {
                LiveCluster.states($0)["h2"] == "dead"
            }
            // A host that does not run VMs cannot take the relay.
            do {
                _ = try await cluster.request(
                    "h3",
                    ControlRequest(command: "restore", id: manifest.id, yes: true, on: ["relay": "h4"])
                )
                Issue.record("the relay was placed on a peer without the vm role")
            } catch {
                #expect("\(error)".contains("--on relay=h4: h4 does not have the vm role"), "\(error)")
            }

            try await cluster.restore("h3", id: manifest.id)
            let statuses = [try await cluster.status("h1"), try await cluster.status("h3")]
            let hosts = statuses.filter { $0.vms.contains { $0.name == "relay" && $0.state == "running" } }
            #expect(hosts.count == 1, "exactly one survivor runs the relay")
            let newHost = hosts.first?.peer.name ?? "h1"
            let restored = try await cluster.waitForSerial(
                host: "h3",
                vm: "sink",
                containing: "verdict=",
                timeout: .seconds(300)
            )
            #expect(restored.contains("verdict=ok"), "restored without h2: \(restored)")
            #expect(restored.contains("digest=\(expected)"), "\(restored)")
            // The new host keeps the relay: it is recorded as adopted, and the next snapshot includes it there.
            let adopted = "\(cluster.host(newHost).directory)/data/adopted/relay.json"
            #expect(FileManager.default.fileExists(atPath: adopted), "\(adopted)")
            let next = try await cluster.snapshot(
                "h1",
                violin: "pipeline",
                mode: .cow,
                name: "after-the-loss",
                target: SnapshotTarget(kind: .memory, replicas: 1)
            )
            #expect(
                next.vms.first { $0.name == "relay" }?.peer == newHost,
                "\(next.vms.map { "\($0.name)@\($0.peer)" })"
            )

            // h2 returns: it hears that the relay moved before it starts anything, and leaves its copy stopped.
            try cluster.startPeer("h2", config: configs["h2"]!)
            let back = try await cluster.waitUntil("h2", timeout: .seconds(90), "back, knowing the relay moved") {
                $0.vms.contains { $0.name == "relay" && $0.state == "moved" }
            }
            let moved = try #require(back.vms.first { $0.name == "relay" })
            #expect(moved.movedTo == "moved to \(newHost) (generation 1)", "\(moved.movedTo ?? "")")
            #expect(moved.pid == nil, "h2 started its copy of the relay")
            let text = try cluster.exec(
                "h2",
                [LiveEnvironment.peerBinary, "status", "--socket", cluster.controlSocket("h2")]
            )
            #expect(text.contains("relay: moved to \(newHost) (generation 1)"), "\(text)")
            try await self.expectOneCopyPerMAC(cluster)

            // A restore of the snapshot taken while the relay ran on h2 places it where it runs now.
            try await cluster.restore("h1", id: manifest.id)
            let relayHost = try await cluster.status(newHost).vms.first { $0.name == "relay" }
            #expect(relayHost?.state == "running", "the relay does not run on \(newHost): \(relayHost?.state ?? "-")")
            #expect(try await cluster.status("h2").vms.first { $0.name == "relay" }?.state == "moved")
            try await self.expectOneCopyPerMAC(cluster)
            let again = try await cluster.verdict(host: "h3")
            #expect(again.contains("verdict=ok") && again.contains("digest=\(expected)"), "\(again)")
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }

    /// Every MAC of the VIOLIN is on exactly one running VM across the cluster.
    func expectOneCopyPerMAC(_ cluster: LiveCluster) async throws {
        var running: [String: [String]] = [:]
        for host in ["h1", "h2", "h3", "h4"] {
            for vm in try await cluster.status(host).vms where vm.state == "running" {
                running[vm.mac, default: []].append("\(vm.name)@\(host)")
            }
        }
        #expect(running.count == 3 && running.values.allSatisfy { $0.count == 1 }, "running: \(running)")
    }
}
