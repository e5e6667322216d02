import Foundation
import Testing
import VNSnapCore
import VNSnapPeer

#if canImport(Glibc)
import Glibc
#endif

/// Snapshots and restores under faults, on real guests across two real peers: nothing half-done is ever
/// listed, every VM keeps running, and a restore that cannot be exact touches nothing.
@Suite(.serialized) struct SnapshotFaultLiveTests {
    static let fastMembership = "probe_interval_ms = 200\nprobe_timeout_ms = 100\nsuspicion_multiplier = 2"

    func startPipeline(_ cluster: LiveCluster, blocks: Int = 20_000) throws {
        var configs = PipelineLiveTests.pipelineConfigs(cluster, blocks: blocks, pace: 2)
        for host in ["h1", "h2"] {
            configs[host] = configs[host]!.replacingOccurrences(
                of: "[membership]\n",
                with: "[membership]\n\(Self.fastMembership)\n"
            )
        }
        try cluster.startPeer("h1", config: configs["h1"]!)
        try cluster.startPeer("h2", config: configs["h2"]!)
    }

    /// Waits until the pipeline's sink has received `blocks` blocks.
    func waitForStream(_ cluster: LiveCluster, atLeast blocks: Int) async throws {
        try await cluster.waitForSerialNumber(
            host: "h1",
            vm: "sink",
            after: "VNSNAP progress blocks=",
            atLeast: blocks,
            timeout: .seconds(180)
        )
    }

    @Test
    func
        test_restoreWithoutYes_stopsNothing_aCorruptedChunkStopsTheRestoreBeforeAnyVMIsTouched_andAKilledParticipantAbortsTheSnapshot()
        async throws
    {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let cluster = try LiveCluster(hosts: ["h1", "h2"])
        do {
            try self.startPipeline(cluster)
            try await self.waitForStream(cluster, atLeast: 300)
            let manifest = try await cluster.snapshot("h1", violin: "pipeline", mode: .cow)
            let pids = [try await cluster.vmPIDs("h1"), try await cluster.vmPIDs("h2")]

            // Without --yes: refused, naming what would be stopped; nothing stopped.
            let unconfirmed = try await ControlClient.request(
                ControlRequest(command: "restore", id: manifest.id, yes: false),
                socket: cluster.controlSocket("h2")
            )
            #expect(!unconfirmed.ok)
            #expect(unconfirmed.error?.contains("nothing was stopped") == true, "\(unconfirmed.error ?? "")")

            // One flipped byte in one chunk of the sink's image on h1: the restore stops in its verify step.
            let store = "\(cluster.host("h1").directory)/data/snapshots/\(manifest.id)/sink/memory"
            let chunk = store + "/chunk-000001.zst"
            var bytes = [UInt8](try #require(FileManager.default.contents(atPath: chunk)))
            bytes[bytes.count / 3] ^= 0x40
            _ = FileManager.default.createFile(atPath: chunk, contents: Data(bytes))
            do {
                try await cluster.restore("h2", id: manifest.id)
                Issue.record("a restore from a corrupted chunk went through")
            } catch {
                let text = "\(error)"
                #expect(text.contains("verify"), "\(text)")
                #expect(text.contains("snapshot \(manifest.id), VM sink, chunk 1"), "\(text)")
            }
            #expect([try await cluster.vmPIDs("h1"), try await cluster.vmPIDs("h2")] == pids, "no VM was touched")
            #expect(try await cluster.status("h1").vms.allSatisfy { $0.runState == "running" })

            // Kill the participant h1 (its peer process, -9) while a snapshot streams: aborted, never listed.
            let asked = Task { try await cluster.snapshot("h2", violin: "pipeline", mode: .cow, name: "doomed") }
            try await Task.sleep(for: .milliseconds(400))
            cluster.signalPeer("h1", SIGKILL)
            do {
                let committed = try await asked.value
                // It may have finished in the 400 ms; then it must be complete and listed.
                #expect(try await cluster.list("h2").contains { $0.id == committed.id })
                Issue.record("the snapshot committed before the kill; the abort could not be shown")
            } catch {
                #expect("\(error)".contains("aborted"), "\(error)")
                #expect(try await cluster.list("h2").map(\.id) == [manifest.id], "only the first snapshot is listed")
            }
            let h2 = try await cluster.status("h2")
            #expect(h2.vms.map(\.runState) == ["running"], "the relay keeps running")
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }

    @Test func test_fullDiskAtTheImageTarget_abortsWithAClearError_deletesThePartialImages_andEveryVMRunsOn()
        async throws
    {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let cluster = try LiveCluster(hosts: ["h1", "h2"])
        // h1's image directory is a small tmpfs (outside the cluster's directory, so teardown never trips on it).
        let target = NSTemporaryDirectory() + "vnsnap-full-\(UInt32.random(in: 0...UInt32.max))"
        do {
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            // Room for about half of one VM's compressed image (~39 MiB each).
            try Shell.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", target])
            try FileManager.default.createDirectory(
                atPath: "\(cluster.host("h1").directory)/data",
                withIntermediateDirectories: true
            )
            try FileManager.default.createSymbolicLink(
                atPath: "\(cluster.host("h1").directory)/data/snapshots",
                withDestinationPath: target
            )
            try self.startPipeline(cluster)
            try await self.waitForStream(cluster, atLeast: 300)
            do {
                _ = try await cluster.snapshot("h2", violin: "pipeline", mode: .cow, name: "too-big")
                Issue.record("a snapshot larger than its disk committed")
            } catch {
                #expect("\(error)".contains("aborted"), "\(error)")
                #expect("\(error)".contains("No space left on device"), "\(error)")
            }
            #expect(try await cluster.list("h1").isEmpty)
            #expect(try await cluster.list("h2").isEmpty)
            // The abort reaches h1 and its partial files go (give it a moment).
            let deadline = ContinuousClock.now + .seconds(10)
            while (try? FileManager.default.contentsOfDirectory(atPath: target))?.isEmpty == false,
                ContinuousClock.now < deadline
            {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: target).isEmpty)
            #expect(try await cluster.status("h1").vms.allSatisfy { $0.runState == "running" })
            #expect(try await cluster.status("h2").vms.allSatisfy { $0.runState == "running" })
            // The stream is still flowing.
            let before = cluster.lastSerialNumber(host: "h1", vm: "sink", after: "VNSNAP progress blocks=")
            // The guests were not left hung by the failed background snapshot: the stream goes on.
            try await self.waitForStream(cluster, atLeast: before + 100)
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
        _ = try? Shell.run(["umount", "-l", target], allowFailure: true)
        try? FileManager.default.removeItem(atPath: target)
    }
}
