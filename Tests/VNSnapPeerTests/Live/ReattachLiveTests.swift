import Foundation
import Testing
import VNSnapCore
import VNSnapPeer

/// The VMs outlive their peer (issue 14), on three peers each running one VM of the pipeline: the relay's peer is
/// killed with SIGKILL mid-stream and started again, and takes its QEMU back (same process, `reattached`); the
/// stream ends with the expected digest; a snapshot and a restore then work as before; the sink's peer, told to
/// keep its VMs, is stopped with SIGTERM for an upgrade and started again, and the restored run ends right too.
@Suite(.serialized) struct ReattachLiveTests {
    static let blocks = 5_000

    /// Every VM's QEMU process id, by host and VM.
    func pids(_ cluster: LiveCluster) async throws -> [String: [String: Int32]] {
        var pids: [String: [String: Int32]] = [:]
        for host in ["h1", "h2", "h3"] { pids[host] = try await cluster.vmPIDs(host) }
        return pids
    }

    /// Waits until `host` runs `vm` reattached.
    func waitForReattach(_ cluster: LiveCluster, host: String, vm: String) async throws {
        try await cluster.waitUntil(host, timeout: .seconds(90), "running \(vm) reattached") { status in
            status.vms.contains { $0.name == vm && $0.state == "running" && $0.reattached == true }
                && status.membership.members.filter { $0.state == "alive" }.count == 3
        }
    }

    @Test func test_peerKilledMidStream_restartReattachesItsVM_streamEndsRight_snapshotRestoreAndUpgradeWork()
        async throws
    {
        try await ViolinOperationsLiveTests.withSpreadPipeline(blocks: Self.blocks) { configs in
            // The sink's peer leaves its VM running when stopped (an upgrade).
            configs["h3"] = configs["h3"]!.replacingOccurrences(of: "[peer]\n", with: "[peer]\nkeep_vms = true\n")
        } _: { cluster, configs, expected in
            // SIGKILL of the relay's peer in mid-stream, and a restart: the same QEMU is taken back.
            let before = try await self.pids(cluster)
            cluster.signalPeer("h2", SIGKILL)
            try await cluster.waitForExit("h2")
            try await Task.sleep(for: .seconds(1))
            let relay = try #require(before["h2"]?["relay"])
            #expect(kill(relay, 0) == 0, "the relay's QEMU died with its peer")
            try cluster.startPeer("h2", config: configs["h2"]!)
            try await self.waitForReattach(cluster, host: "h2", vm: "relay")
            #expect(try await self.pids(cluster) == before, "a VM was started again instead of reattached")
            let text = try cluster.exec(
                "h2",
                [LiveEnvironment.peerBinary, "status", "--socket", cluster.controlSocket("h2")]
            )
            #expect(text.contains("running (reattached)"), "\(text)")

            // A snapshot while the stream runs on, then the live run ends right.
            let manifest = try await cluster.snapshot("h1", violin: "pipeline", mode: .cow, name: "after-reattach")
            #expect(manifest.vms.map(\.name) == ["relay", "sink", "source"])
            let live = try await cluster.verdict(host: "h3")
            #expect(live.contains("verdict=ok") && live.contains("digest=\(expected)"), "live run: \(live)")

            // The restore works as before; the sink's peer is upgraded (SIGTERM, keeping its VM) mid-run.
            try await cluster.restore("h1", id: manifest.id)
            let restored = try await self.pids(cluster)
            #expect(restored != before, "the restore replaced the VMs")
            cluster.signalPeer("h3", SIGTERM)
            try await cluster.waitForExit("h3")
            let sink = try #require(restored["h3"]?["sink"])
            #expect(kill(sink, 0) == 0, "the sink's QEMU was stopped although its peer keeps VMs")
            try cluster.startPeer("h3", config: configs["h3"]!)
            try await self.waitForReattach(cluster, host: "h3", vm: "sink")
            #expect(try await self.pids(cluster) == restored)
            let run = try await cluster.verdict(host: "h3")
            #expect(run.contains("verdict=ok") && run.contains("digest=\(expected)"), "restored run: \(run)")
        }
    }

    /// Whether `host`'s peer log has a line with all of `parts`.
    func logHas(_ cluster: LiveCluster, _ host: String, _ parts: String...) -> Bool {
        let text = (try? String(contentsOfFile: "\(cluster.host(host).directory)/peer.log", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").contains { line in parts.allSatisfy { line.contains($0) } }
    }

    /// Found by tools/chaos: a peer killed while QEMU saves its VM's RAM into it in the background leaves, with QEMU
    /// 7.2, the guest's RAM write-protected and every QEMU thread blocked for good on its next write. The restarted
    /// peer releases the protection as it reattaches: the stream ends right, and a snapshot (a background one again)
    /// and a restore work.
    @Test func test_peerKilledDuringItsVMsBackgroundSave_restartReleasesTheWriteProtection_streamEndsRight()
        async throws
    {
        try await ViolinOperationsLiveTests.withSpreadPipeline(blocks: Self.blocks) { cluster, configs, expected in
            // A snapshot asked on h1; the relay's peer is killed right after the relay's cut, mid-save.
            let interrupted = Task {
                try? await cluster.snapshot("h1", violin: "pipeline", mode: .cow, name: "cut-short")
            }
            let deadline = ContinuousClock.now + .seconds(120)
            while !self.logHas(cluster, "h2", "VM cut timed", "vm.name=relay") {
                guard ContinuousClock.now < deadline else { throw Shell.Failure(description: "the relay was not cut") }
                try await Task.sleep(for: .milliseconds(10))
            }
            cluster.signalPeer("h2", SIGKILL)
            try await cluster.waitForExit("h2")
            _ = await interrupted.value

            try cluster.startPeer("h2", config: configs["h2"]!)
            try await self.waitForReattach(cluster, host: "h2", vm: "relay")
            #expect(
                self.logHas(cluster, "h2", "Released the write protection"),
                "\(cluster.peerLogSummary("h2"))"
            )
            let manifest = try await cluster.snapshot("h1", violin: "pipeline", mode: .cow, name: "after-release")
            let live = try await cluster.verdict(host: "h3")
            #expect(live.contains("verdict=ok") && live.contains("digest=\(expected)"), "live run: \(live)")
            try await cluster.restore("h1", id: manifest.id)
            let run = try await cluster.verdict(host: "h3")
            #expect(run.contains("verdict=ok") && run.contains("digest=\(expected)"), "restored run: \(run)")
        }
    }
}
