import Foundation
import Testing
import VNSnapCore
import VNSnapPeer

/// Peers in four kinds of domain (issue 15): two public hosts, one behind a NAT that keeps its port for every
/// destination, one behind a NAT that picks a random port per destination, and one with a public address behind a
/// firewall that drops every unsolicited datagram. Each classifies itself from its own probes' acks and the
/// dial-backs it gets, with no configuration saying which is which.
@Suite(.serialized) struct DomainsLiveTests {
    @Test func test_peersInFourKindsOfDomain_classifyTheirOwnReachability_fromAcksAndDialBacks() async throws {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let cluster = try LiveCluster(hosts: ["p1", "p2", "fw", "ei", "sym"], bystanders: ["rei", "rsym"])
        do {
            let keeping = cluster.host("rei").address
            try cluster.putBehindRouter("ei", router: "rei", lan: 1, nat: "snat to \(keeping)")
            try cluster.putBehindRouter("sym", router: "rsym", lan: 2, nat: "masquerade fully-random")
            try cluster.blockInbound("fw")
            for name in ["p1", "p2", "fw", "ei", "sym"] {
                try cluster.startPeer(name, config: cluster.baseConfig(name))
            }
            let expected = [
                "p1": "public", "p2": "public", "fw": "inbound blocked", "ei": "endpoint-independent",
                "sym": "symmetric",
            ]
            for (name, nat) in expected.sorted(by: { $0.key < $1.key }) {
                let status = try await cluster.waitUntil(name, timeout: .seconds(90), "classifying itself \(nat)") {
                    $0.membership.members.first { $0.isSelf }?.nat == nat
                }
                if name == "ei" {
                    #expect(status.membership.publicAddress == "\(keeping):7947", "the NAT keeps the port")
                }
            }
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }
}

/// A VIOLIN spread over three domains (issue 15): the source behind a port-keeping NAT, the relay VM behind a
/// symmetric NAT, the sink behind a firewall that drops everything unsolicited, and two public peers with the
/// `relay` role and no VMs. Nobody is told who is behind what.
@Suite(.serialized) struct DomainsPipelineLiveTests {
    static let blocks = 3_000
    static let relayRole = "[peer]\nroles = [\"relay\", \"store\"]\nstore_capacity_mib = 1024\n"
    static let natStoreRole = "[peer]\nroles = [\"vm\", \"store\"]\nstore_capacity_mib = 1024\n"

    /// Starts the relays, then the pipeline's three hosts behind their NATs and firewall.
    static func startAcrossDomains(_ cluster: LiveCluster) async throws {
        let keeping = cluster.host("g1").address
        try cluster.putBehindRouter("h1", router: "g1", lan: 1, nat: "snat to \(keeping)")
        try cluster.putBehindRouter("h2", router: "g2", lan: 2, nat: "masquerade fully-random")
        try cluster.blockInbound("h3")
        for relay in ["r1", "r2"] {
            try cluster.startPeer(
                relay,
                config: cluster.baseConfig(relay).replacingOccurrences(of: "[peer]\n", with: Self.relayRole)
            )
        }
        // The VIOLIN announces an MTU that no path fragments, relayed or not (BENCHMARKS: across domains).
        var configs = try ViolinOperationsLiveTests.spreadPipeline(cluster, blocks: Self.blocks).mapValues {
            $0.replacingOccurrences(of: "vni = 42\n", with: "vni = 42\nmtu = 1280\n")
        }
        // h2, behind the symmetric NAT, is a store too: others reach it only through a relay's splice.
        configs["h2"] = configs["h2"]?.replacingOccurrences(of: "[peer]\n", with: Self.natStoreRole)
        try await ViolinOperationsLiveTests.startSpread(cluster, configs: configs)
    }

    @Test
    func test_aPipelineAcrossThreeDomains_joinsThroughRelays_survivesARelayKilledAndFlushedNATs_andRestores()
        async throws
    {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let expected = try LiveEnvironment.expectedDigest(blocks: Self.blocks)
        let cluster = try LiveCluster(hosts: ["h1", "h2", "h3", "r1", "r2"], bystanders: ["g1", "g2"])
        do {
            try await Self.startAcrossDomains(cluster)
            let names = Set(["h1", "h2", "h3", "r1", "r2"])
            for host in names.sorted() {
                try await cluster.waitUntil(host, timeout: .seconds(90), "seeing every member alive") { status in
                    Set(status.membership.members.filter { $0.state == "alive" }.map(\.name)) == names
                }
            }
            // Each classified itself; the symmetric one is reached through relays, the two that keep a mapping
            // punch a direct path between them.
            let kinds = [
                "h1": "endpoint-independent", "h2": "symmetric", "h3": "inbound blocked", "r1": "public",
                "r2": "public",
            ]
            let announced = try await cluster.waitForSerial(
                host: "h3",
                vm: "sink",
                containing: "eth0 mtu=",
                timeout: .seconds(10)
            )
            #expect(announced.contains("eth0 mtu=1280"), "\(announced)")
            for (host, kind) in kinds.sorted(by: { $0.key < $1.key }) {
                try await cluster.waitUntil(host, timeout: .seconds(90), "classifying itself \(kind)") {
                    $0.membership.members.first { $0.isSelf }?.nat == kind
                }
            }
            let h2 = try await cluster.waitUntil("h2", timeout: .seconds(60), "choosing both relays") {
                $0.membership.members.first { $0.isSelf }?.relays?.count == 2
            }
            let carrier = try #require(h2.membership.members.first { $0.isSelf }?.relays?.first)
            let survivor = carrier == "r1" ? "r2" : "r1"
            try await cluster.waitUntil("h1", timeout: .seconds(30), "reaching h2 through a relay") {
                $0.switch.tunnels.first { $0.peer == "h2" }?.path?.hasPrefix("via relay") == true
            }
            try await cluster.waitUntil("h1", timeout: .seconds(60), "punching a path to h3") {
                $0.switch.tunnels.first { $0.peer == "h3" }?.path == "punched"
            }
            // The pair's initiator timed a punch by the relay's round trip.
            let timed = try ["h1", "h3"].map {
                try String(contentsOfFile: "\(cluster.host($0).directory)/peer.log", encoding: .utf8)
            }
            #expect(timed.contains { $0.contains("timed by the relay's round trip") }, "no timed punch logged")

            // Replicas in the relays' RAM, streamed out of the NATs, and in h2's behind the symmetric NAT, through a
            // relay that joins each stream to one h2 dials back.
            let inMemory = try await cluster.snapshot(
                "h1",
                violin: "pipeline",
                mode: .cow,
                name: "replicas",
                target: SnapshotTarget(kind: .memory, replicas: 3)
            )
            let away = inMemory.vms.filter { $0.name != "relay" }  // h2's own VM: its third replica is its own
            #expect(away.allSatisfy { Set($0.replicas ?? []) == ["r1", "r2", "h2"] }, "\(inMemory.vms)")
            var spliced: UInt64 = 0
            for relay in ["r1", "r2"] { spliced += try await cluster.status(relay).splice?.joined ?? 0 }
            #expect(spliced >= 2, "streams joined to h2 by the relays: \(spliced)")

            // The relay carrying h2's tunnels dies in the middle of a snapshot; then the NATs forget every mapping.
            async let onDisk = cluster.snapshot("h3", violin: "pipeline", mode: .cow, name: "relay-dies")
            try await Task.sleep(for: .milliseconds(300))
            kill(try #require(cluster.host(carrier).peerPID), SIGKILL)
            let survived = try await onDisk
            #expect(survived.vms.map(\.name) == ["relay", "sink", "source"])
            for router in ["g1", "g2"] {
                _ = try Shell.run(["ip", "netns", "exec", cluster.host(router).namespace, "conntrack", "-F"])
            }
            let live = try await cluster.verdict(host: "h3")
            #expect(live.contains("verdict=ok") && live.contains("digest=\(expected)"), "live run: \(live)")
            // Nobody but the killed relay was ever declared dead.
            for host in names.subtracting([carrier]).sorted() {
                let log =
                    (try? String(contentsOfFile: "\(cluster.host(host).directory)/peer.log", encoding: .utf8)) ?? ""
                let deaths = log.split(separator: "\n").filter {
                    $0.contains("Member dead") && !$0.contains("name=\(carrier) ")
                }
                #expect(deaths.isEmpty, "\(host): \(deaths)")
            }
            let after = try await cluster.waitUntil("h1", timeout: .seconds(10), "using the surviving relay") {
                $0.switch.tunnels.first { $0.peer == "h2" }?.path == "via relay \(survivor)"
            }
            print("h1 paths: \(after.switch.tunnels.map { "\($0.peer) \($0.path ?? "-")" })")
            // Every tunnel, relayed ones included, is sealed with the pair's keys: the relays forwarded what they
            // could not open.
            #expect(after.switch.tunnels.allSatisfy { $0.endToEnd == true }, "\(after.switch.tunnels)")

            try await cluster.restore("h2", id: inMemory.id)
            let restored = try await cluster.verdict(host: "h3")
            #expect(
                restored.contains("verdict=ok") && restored.contains("digest=\(expected)"),
                "restored run: \(restored)"
            )
            let relay = try await cluster.status(survivor)
            print("\(survivor) served: \(relay.switch.served ?? [:])")
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }
}
