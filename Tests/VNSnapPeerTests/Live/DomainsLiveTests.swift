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
    static let relayRole = "[peer]\nroles = [\"relay\"]\n"

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
        let configs = try ViolinOperationsLiveTests.spreadPipeline(cluster, blocks: Self.blocks)
        try await ViolinOperationsLiveTests.startSpread(cluster, configs: configs)
    }

    @Test
    func test_aPipelineAcrossThreeDomains_joinsThroughRelays_andEndsRightLiveWithASnapshotAndRestored() async throws {
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
            // The symmetric one is reached through relays; its peers' tunnels say so.
            let sym = try await cluster.waitUntil("h2", timeout: .seconds(90), "choosing relays") {
                $0.membership.members.first { $0.isSelf }?.relays?.count == 2
            }
            #expect(sym.membership.members.first { $0.isSelf }?.nat == "symmetric")
            let toSym = try await cluster.waitUntil("h1", timeout: .seconds(30), "reaching h2 through a relay") {
                $0.switch.tunnels.first { $0.peer == "h2" }?.path?.hasPrefix("via relay") == true
            }
            print("h1 → h2: \(toSym.switch.tunnels.first { $0.peer == "h2" }?.path ?? "?")")

            let manifest = try await cluster.snapshot("h1", violin: "pipeline", mode: .cow, name: "across")
            #expect(manifest.vms.map(\.name) == ["relay", "sink", "source"])
            let live = try await cluster.verdict(host: "h3")
            #expect(live.contains("verdict=ok") && live.contains("digest=\(expected)"), "live run: \(live)")
            // No member was ever declared dead meanwhile.
            for host in names.sorted() {
                let members = try await cluster.status(host).membership.members
                #expect(members.allSatisfy { $0.state == "alive" }, "\(host): \(members.map { ($0.name, $0.state) })")
            }

            try await cluster.restore("h2", id: manifest.id)
            let restored = try await cluster.verdict(host: "h3")
            #expect(
                restored.contains("verdict=ok") && restored.contains("digest=\(expected)"),
                "restored run: \(restored)"
            )
            for host in ["h1", "h2", "h3"] {
                let status = try await cluster.status(host)
                print("\(host) paths: \(status.switch.tunnels.map { "\($0.peer) \($0.path ?? "-")" })")
            }
            for relay in ["r1", "r2"] {
                let status = try await cluster.status(relay)
                print("\(relay) served: \(status.switch.served ?? [:])")
            }
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }
}
