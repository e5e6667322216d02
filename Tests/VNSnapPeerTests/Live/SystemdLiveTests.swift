import Foundation
import Testing
import VNSnapPeer

#if canImport(Glibc)
import Glibc
#endif

/// The daemon as a systemd `Type=notify` service sees it, and its JSON log.
@Suite(.serialized) struct SystemdLiveTests {
    @Test func test_peerUnderNotifySocket_reportsReadyOnceJoined_andStoppingOnSIGTERM_loggingJSONLines() async throws {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let cluster = try LiveCluster(hosts: ["h1", "h2"])
        let socket = "\(cluster.host("h2").directory)/notify.sock"
        let fd = try SystemdNotifierTests.listen(socket)
        defer { close(fd) }
        do {
            try cluster.startPeer("h1", config: cluster.baseConfig("h1"))
            try cluster.startPeer(
                "h2",
                config: cluster.baseConfig("h2"),
                arguments: ["--log-format", "json"],
                environment: ["NOTIFY_SOCKET": socket]
            )
            // Readiness waits for the join (h1 is h2's seed); the datagram comes on its own thread's read.
            let ready = await Task.detached { SystemdNotifierTests.receive(fd) }.value
            #expect(ready == "READY=1\nSTATUS=joined: 2 members alive\n", "\(ready)")
            let status = try await cluster.status("h2")
            #expect(LiveCluster.states(status)["h1"] == "alive")

            cluster.signalPeer("h2", SIGTERM)
            let stopping = await Task.detached { SystemdNotifierTests.receive(fd) }.value
            #expect(stopping == "STOPPING=1\nSTATUS=stopping\n", "\(stopping)")
            try await cluster.waitForExit("h2")

            let log = try String(contentsOfFile: "\(cluster.host("h2").directory)/peer.log", encoding: .utf8)
            let lines = log.split(separator: "\n")
            #expect(lines.count > 3)
            for line in lines {
                let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                #expect(object?["message"] is String && object?["level"] is String, "not a JSON record: \(line)")
            }
            #expect(
                lines.contains { $0.contains("\"message\":\"Peer started\"") && $0.contains("\"peer.name\":\"h2\"") }
            )
        } catch {
            Issue.record("\(error)")
            for name in ["h1", "h2"] { print("--- \(name)\n\(cluster.peerLogSummary(name))") }
        }
        await cluster.teardown()
    }
}
