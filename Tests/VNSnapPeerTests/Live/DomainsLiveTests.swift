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
