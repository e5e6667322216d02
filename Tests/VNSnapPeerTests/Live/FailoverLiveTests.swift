import Foundation
import Synchronization
import Testing
import VNSnapCore
import VNSnapPeer

/// The initiator is killed while a snapshot's images stream (DESIGN §6, failover): the next initiator asks the
/// participants what they hold and commits or aborts the snapshot everywhere. Three peers: the initiator (the
/// lowest-ordered, so the one elected) runs no VM; the pipeline runs on the other two.
@Suite(.serialized) struct FailoverLiveTests {
    @Test func test_initiatorKilledMidStream_nextInitiatorFinishesIt_listedEverywhereOrNowhere() async throws {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let names = ["h1", "h2", "h3"].sorted { PeerID(name: $0) < PeerID(name: $1) }
        let (first, vms, relay) = (names[0], names[1], names[2])
        let cluster = try LiveCluster(hosts: names)
        do {
            let configs = PipelineLiveTests.pipelineConfigs(cluster, blocks: 6_000, pace: 10)
            // Host h1's VMs (source, sink) and h2's (relay) go to the two peers that are not the initiator.
            let violin = "\n[[violins]]\nname = \"pipeline\"\nvni = 42\n"
            let h1VMs = configs["h1"]!.components(separatedBy: "[[vms]]").dropFirst().map { "[[vms]]" + $0 }.joined()
            let h2VMs = configs["h2"]!.components(separatedBy: "[[vms]]").dropFirst().map { "[[vms]]" + $0 }.joined()
            try cluster.startPeer(first, config: cluster.baseConfig(first) + violin)
            try cluster.startPeer(relay, config: cluster.baseConfig(relay) + violin + h2VMs)
            try cluster.startPeer(vms, config: cluster.baseConfig(vms) + violin + h1VMs)
            try await cluster.waitUntil(vms, timeout: .seconds(60), "electing \(first)") {
                $0.membership.election.initiator == first
                    && $0.membership.members.filter { $0.state == "alive" }.count == 3
            }
            try await cluster.waitForSerialNumber(
                host: vms,
                vm: "sink",
                after: "VNSNAP progress blocks=",
                atLeast: 500,
                timeout: .seconds(180)
            )
            // Ask on a VM peer; kill the initiator as soon as the images stream.
            let killed = Mutex(false)
            let peerPID = try #require(cluster.host(first).peerPID)
            let socket = cluster.controlSocket(vms)
            let outcome: Result<ControlResponse, any Error>
            do {
                outcome = .success(
                    try await ControlClient.request(
                        ControlRequest(
                            command: "snapshot",
                            snapshot: SnapshotOrder(violin: "pipeline", mode: .cow, name: "orphan", target: .disk)
                        ),
                        socket: socket,
                        timeout: .seconds(240)
                    ) { line in
                        guard line.contains("streaming") else { return }
                        killed.withLock { done in
                            if !done { kill(peerPID, SIGKILL) }
                            done = true
                        }
                    }
                )
            } catch {
                outcome = .failure(error)
            }
            #expect(killed.withLock { $0 }, "the snapshot never streamed")
            // The next initiator decides; both survivors end the same way.
            try await cluster.waitUntil(vms, timeout: .seconds(60), "electing a new initiator") {
                $0.membership.election.initiator != nil && $0.membership.election.initiator != first
            }
            var lists: [[UInt64]] = []
            let deadline = ContinuousClock.now + .seconds(120)
            repeat {
                try await Task.sleep(for: .seconds(1))
                lists = [try await cluster.list(vms).map(\.id), try await cluster.list(relay).map(\.id)]
            } while lists[0] != lists[1] && ContinuousClock.now < deadline
            #expect(lists[0] == lists[1], "listed on one survivor only: \(lists)")
            switch outcome {
            case .success(let response) where response.ok:
                // Committed by the new initiator: listed on both, and it restores.
                let manifest = try #require(response.manifest)
                #expect(lists[0] == [manifest.id], "\(lists)")
                try await cluster.restore(vms, id: manifest.id)
                let restored = try await cluster.waitForSerial(
                    host: vms,
                    vm: "sink",
                    containing: "verdict=",
                    timeout: .seconds(300)
                )
                #expect(restored.contains("verdict=ok"), "restored after failover: \(restored)")
                // The killed initiator comes back: it learns the commit it missed from the others' catalogs.
                try cluster.startPeer(first, config: cluster.baseConfig(first) + violin)
                let back = ContinuousClock.now + .seconds(90)
                var listed: [UInt64] = []
                while listed != [manifest.id], ContinuousClock.now < back {
                    try await Task.sleep(for: .seconds(1))
                    listed = (try? await cluster.list(first).map(\.id)) ?? []
                }
                #expect(listed == [manifest.id], "the returning initiator lists \(listed)")
            case .success(let response):
                // Aborted everywhere: listed nowhere, and the reason says why.
                #expect(lists[0].isEmpty, "\(lists)")
                #expect(response.error?.contains("abort") == true, "\(response.error ?? "")")
            case .failure(let error):
                Issue.record("the request failed: \(error)")
            }
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }
}
