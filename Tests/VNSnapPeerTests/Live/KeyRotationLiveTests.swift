import Foundation
import Testing
import VNSnapCore
import VNSnapCrypto
import VNSnapImage
import VNSnapPeer

/// A cluster-wide key rotation (install, use, remove) with `vnsnap-peer keys` while the 3-VM pipeline streams
/// through the tunnels, with a third peer that is away for part of it and catches up; a snapshot sealed at rest
/// under the old key keeps it from being removed, and restores after the rotation.
@Suite(.serialized) struct KeyRotationLiveTests {
    static let blocks = 3000

    static func keys(_ cluster: LiveCluster, _ host: String, _ arguments: [String]) async throws
        -> DaemonLiveTests.Outcome
    {
        try await DaemonLiveTests.runBinary(
            ["keys"] + arguments + ["--socket", cluster.controlSocket(host)],
            timeout: .seconds(60)
        )
    }

    @Test func test_keyRotation_whilePipelineStreams_digestIntact_anAwayPeerCatchesUp_andASealedSnapshotKeepsItsKey()
        async throws
    {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let expected = try LiveEnvironment.expectedDigest(blocks: Self.blocks)
        let cluster = try LiveCluster(hosts: ["h1", "h2", "h3"])
        let old = cluster.keyring.primary
        let new = SecretKey.generate()
        do {
            // 10 ms per block: the stream lasts about half a minute, through the whole rotation.
            let configs = PipelineLiveTests.pipelineConfigs(cluster, blocks: Self.blocks, pace: 10)
            try cluster.startPeer("h1", config: configs["h1"]!)
            try cluster.startPeer("h2", config: configs["h2"]!)
            let h3Config = cluster.baseConfig("h3")
            try cluster.startPeer("h3", config: h3Config)
            try await cluster.waitUntil("h1", "seeing three members") {
                Set($0.membership.members.filter { $0.state == "alive" }.map(\.name)) == ["h1", "h2", "h3"]
            }
            // h3 goes away before the rotation starts.
            cluster.signalPeer("h3", SIGTERM)
            try await cluster.waitForExit("h3")
            _ = try await cluster.waitForSerial(
                host: "h1",
                vm: "sink",
                containing: "VNSNAP progress",
                timeout: .seconds(120)
            )

            // A snapshot before the rotation: its chunks are sealed at rest under the old key.
            let before = try await cluster.snapshot("h1", violin: "pipeline", mode: .cow, name: "before-rotation")
            #expect(before.vms.allSatisfy { $0.sealedWith == old.keyID }, "\(before.vms.map(\.sealedWith))")
            let chunk = "\(cluster.host("h1").directory)/data/snapshots/\(before.id)/sink/memory/chunk-000000.zst"
            let head = [UInt8]((FileManager.default.contents(atPath: chunk) ?? Data()).prefix(8))
            #expect(head == ChunkCipher.magic + withUnsafeBytes(of: old.keyID.bigEndian) { Array($0) }, "\(head)")

            let install = try await Self.keys(cluster, "h1", ["install", new.base64])
            #expect(install.status == 0, "\(install.output)")
            let use = try await Self.keys(cluster, "h2", ["use", String(new.fingerprint.prefix(12))])
            #expect(use.status == 0, "\(use.output)")

            // The old key still seals that snapshot: removing it is refused, naming it; restoring it works.
            let early = try await Self.keys(cluster, "h1", ["remove", String(old.fingerprint.prefix(12))])
            #expect(early.status != 0 && early.output.contains("\(before.id)"), "\(early.output)")
            try await cluster.restore("h2", id: before.id)
            let after = try await cluster.snapshot("h2", violin: "pipeline", mode: .cow, name: "after-rotation")
            #expect(after.vms.allSatisfy { $0.sealedWith == new.keyID })
            _ = try await cluster.request("h1", ControlRequest(command: "delete", id: before.id))

            // h3 returns with its old keyring file (only the old key, generation 0) and is brought up to date.
            try cluster.startPeer("h3", config: h3Config)
            try await cluster.waitUntil("h1", "seeing h3 back with the same keyring") { status in
                status.membership.members.contains { $0.name == "h3" && $0.state == "alive" && $0.keyringInSync }
            }
            let remove = try await Self.keys(cluster, "h1", ["remove", String(old.fingerprint.prefix(12))])
            #expect(remove.status == 0, "\(remove.output)")
            let sinkLog =
                (try? String(contentsOfFile: cluster.serialLog(host: "h1", vm: "sink"), encoding: .utf8)) ?? ""
            #expect(!sinkLog.contains("verdict="), "the stream ended before the rotation did: not a test under load")

            let verdict = try await cluster.waitForSerial(
                host: "h1",
                vm: "sink",
                containing: "verdict=",
                timeout: .seconds(180)
            )
            #expect(verdict.contains("verdict=ok"), "\(verdict)")
            #expect(verdict.contains("digest=\(expected)"), "\(verdict)")

            for host in ["h1", "h2", "h3"] {
                let status = try await cluster.status(host)
                #expect(status.membership.keyring.keys.count == 1, "\(host): \(status.membership.keyring)")
                #expect(status.membership.keyring.keys.first?.fingerprint == new.shortFingerprint, "\(host)")
                #expect(status.membership.keyring.generation == 3, "\(host)")
                let stored = try Keyring.parse(
                    String(contentsOfFile: "\(cluster.host(host).directory)/keyring", encoding: .utf8),
                    path: host
                )
                #expect(stored.keys == [new], "\(host)'s keyring file was not updated")
            }

            // A peer that comes back with only the removed key cannot join; both sides say why.
            cluster.signalPeer("h3", SIGTERM)
            try await cluster.waitForExit("h3")
            try cluster.startPeer("h3", config: cluster.baseConfig("h3", keyring: Keyring(keys: [old])!))
            let address = cluster.host("h3").address
            try await cluster.waitUntil("h1", "reporting h3's datagrams it cannot open") {
                $0.membership.keyring.lastUnknownKey?.contains(address) == true
            }
            let stale = try await cluster.waitUntil("h3", "waiting for seeds") {
                !$0.membership.waitingForSeeds.isEmpty && $0.peer.uptimeSeconds > 6
            }
            #expect(stale.membership.members.map(\.name) == ["h3"])
            for (host, hint) in [("h1", "vnsnap-peer keys install"), ("h3", "No seed has answered")] {
                let log =
                    (try? String(contentsOfFile: "\(cluster.host(host).directory)/peer.log", encoding: .utf8)) ?? ""
                #expect(log.contains(hint), "no hint in \(host)'s log")
            }
        } catch {
            Issue.record("\(error)")
            for name in ["h1", "h2", "h3"] { print("--- \(name)\n\(cluster.peerLogSummary(name))") }
        }
        await cluster.teardown()
    }
}
