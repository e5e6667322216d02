import Foundation
import Synchronization
import Testing
import VNSnapCore
import VNSnapPeer

/// Operations on one VIOLIN never destroy it (issue 13), on three peers each running one VM of the pipeline:
/// two snapshots asked at once from two hosts both commit, one after the other; a restore whose load fails on
/// one peer leaves every VM running as it was; a snapshot asked with `--no-wait` and a delete of the snapshot
/// being restored are refused naming the restore, and the restore completes.
@Suite(.serialized) struct ViolinOperationsLiveTests {
    static let blocks = 5_000

    /// Starts h1, h2 and h3 with `configs` (`spreadPipeline`'s, perhaps amended) and waits until the sink has
    /// received 300 blocks.
    static func startSpread(_ cluster: LiveCluster, configs: [String: String]) async throws {
        for host in ["h1", "h2", "h3"] { try cluster.startPeer(host, config: configs[host]!) }
        try await cluster.waitForSerialNumber(
            host: "h3",
            vm: "sink",
            after: "VNSNAP progress blocks=",
            atLeast: 300,
            timeout: .seconds(240)
        )
    }

    /// On a fresh cluster of h1, h2 and h3 running the spread pipeline (its configs amended by `amend`), started:
    /// runs `body` with the cluster, the configs and the stream's expected digest; records what it throws, and
    /// tears the cluster down whatever happens.
    static func withSpreadPipeline(
        blocks: Int,
        amend: (inout [String: String]) -> Void = { _ in },
        _ body: (LiveCluster, [String: String], String) async throws -> Void
    ) async throws {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let expected = try LiveEnvironment.expectedDigest(blocks: blocks)
        let cluster = try LiveCluster(hosts: ["h1", "h2", "h3"])
        do {
            var configs = try Self.spreadPipeline(cluster, blocks: blocks)
            amend(&configs)
            try await Self.startSpread(cluster, configs: configs)
            try await body(cluster, configs, expected)
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }

    /// Configs of the pipeline spread over three hosts, one VM each: source on h1, relay on h2, sink on h3.
    static func spreadPipeline(_ cluster: LiveCluster, blocks: Int, pace: Int = 10) throws -> [String: String] {
        let configs = PipelineLiveTests.pipelineConfigs(cluster, blocks: blocks, pace: pace)
        let violin = "\n[[violins]]\nname = \"pipeline\"\nvni = 42\n"
        func vms(_ host: String) -> [String] {
            configs[host]!.components(separatedBy: "[[vms]]").dropFirst().map { "[[vms]]" + $0 }
        }
        let (h1, h2) = (vms("h1"), vms("h2"))
        let source = try #require(h1.first { $0.contains("\"source\"") })
        let sink = try #require(h1.first { $0.contains("\"sink\"") })
        return [
            "h1": cluster.baseConfig("h1") + violin + source,
            "h2": cluster.baseConfig("h2") + violin + h2.joined(),
            "h3": cluster.baseConfig("h3") + violin + sink,
        ]
    }

    /// Every VM's QEMU process id, by host and VM.
    func pids(_ cluster: LiveCluster) async throws -> [String: [String: Int32]] {
        var pids: [String: [String: Int32]] = [:]
        for host in ["h1", "h2", "h3"] { pids[host] = try await cluster.vmPIDs(host) }
        return pids
    }

    /// Restores `id` asked on `host`, calling `onProgress` with each progress line.
    func restore(
        _ cluster: LiveCluster,
        on host: String,
        id: UInt64,
        onProgress: @escaping @Sendable (String) -> Void
    ) async throws -> ControlResponse {
        try await ControlClient.request(
            ControlRequest(command: "restore", id: id, yes: true),
            socket: cluster.controlSocket(host),
            timeout: .seconds(300),
            onProgress: onProgress
        )
    }

    @Test
    func
        test_concurrentSnapshots_bothCommitInTurn_aFailedLoadRollsBack_andADeleteOfASnapshotBeingRestoredIsRefused()
        async throws
    {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let expected = try LiveEnvironment.expectedDigest(blocks: Self.blocks)
        let cluster = try LiveCluster(hosts: ["h1", "h2", "h3"])
        do {
            try await Self.startSpread(cluster, configs: try Self.spreadPipeline(cluster, blocks: Self.blocks))

            // Two snapshots asked at the same moment from two hosts: both commit, one after the other.
            async let fromH2 = cluster.snapshot("h2", violin: "pipeline", mode: .cow, name: "from-h2")
            async let fromH3 = cluster.snapshot("h3", violin: "pipeline", mode: .cow, name: "from-h3")
            let manifests = [try await fromH2, try await fromH3]
            #expect(manifests[0].id != manifests[1].id)
            #expect(manifests[0].epoch != manifests[1].epoch, "each cut the VIOLIN to its own epoch")
            #expect(manifests.allSatisfy { $0.vms.map(\.name) == ["relay", "sink", "source"] })
            #expect(Set(try await cluster.list("h1").map(\.id)) == Set(manifests.map(\.id)))

            // A restore whose load fails on h3 (the sink's image vanishes once verified): rolled back, every VM
            // runs on as it was, same QEMU processes, and the live run still ends right.
            let before = try await self.pids(cluster)
            let images = "\(cluster.host("h3").directory)/data/snapshots/\(manifests[0].id)/sink/memory"
            let removed = Mutex(false)
            let failed = try await self.restore(cluster, on: "h1", id: manifests[0].id) { line in
                guard line.contains("every chunk verified") else { return }
                removed.withLock { done in
                    guard !done else { return }
                    done = true
                    for file in (try? FileManager.default.contentsOfDirectory(atPath: images)) ?? []
                    where file.hasPrefix("chunk-") {
                        try? FileManager.default.removeItem(atPath: "\(images)/\(file)")
                    }
                }
            }
            #expect(removed.withLock { $0 }, "the restore never got past verify")
            #expect(!failed.ok)
            let reason = failed.error ?? ""
            #expect(reason.contains("step load") && reason.contains("h3"), "\(reason)")
            #expect(reason.contains("rolled back: every VM runs as it did before the restore"), "\(reason)")
            #expect(try await self.pids(cluster) == before, "no VM was replaced")
            for host in ["h1", "h2", "h3"] {
                let vms = try await cluster.status(host).vms
                #expect(vms.allSatisfy { $0.runState == "running" }, "\(host): \(vms.map(\.runState))")
            }
            let live = try await cluster.verdict(host: "h3")
            #expect(live.contains("verdict=ok") && live.contains("digest=\(expected)"), "live run: \(live)")

            // A delete of the snapshot being restored is refused, naming the restore; the restore completes.
            let granted = Mutex(false)
            async let restored = self.restore(cluster, on: "h3", id: manifests[1].id) { line in
                if line.contains("verifying") { granted.withLock { $0 = true } }
            }
            let deadline = ContinuousClock.now + .seconds(60)
            while !granted.withLock({ $0 }), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            // A snapshot asked with --no-wait meanwhile is refused at once, naming the restore.
            let busy = try await ControlClient.request(
                ControlRequest(
                    command: "snapshot",
                    snapshot: SnapshotOrder(violin: "pipeline", mode: .cow, name: "now"),
                    wait: false
                ),
                socket: cluster.controlSocket("h1"),
                timeout: .seconds(30)
            )
            #expect(!busy.ok, "a snapshot started during a restore")
            #expect(
                busy.error?.contains("a restore of snapshot \(manifests[1].id) of pipeline, asked on h3 is in progress")
                    == true,
                "\(busy.error ?? "")"
            )
            let deleted = try await ControlClient.request(
                ControlRequest(command: "delete", id: manifests[1].id),
                socket: cluster.controlSocket("h2"),
                timeout: .seconds(30)
            )
            #expect(!deleted.ok, "a snapshot being restored was deleted")
            #expect(
                deleted.error?.contains("is in use by a restore of snapshot \(manifests[1].id)") == true,
                "\(deleted.error ?? "")"
            )
            let response = try await restored
            #expect(response.ok, "\(response.error ?? "")")
            let run = try await cluster.verdict(host: "h3")
            #expect(run.contains("verdict=ok") && run.contains("digest=\(expected)"), "restored run: \(run)")
            #expect(try await self.pids(cluster) != before, "the restore replaced the VMs")
            // Once the restore has ended, the delete goes through.
            _ = try await cluster.request("h2", ControlRequest(command: "delete", id: manifests[1].id))
            #expect(try await cluster.list("h3").map(\.id) == [manifests[0].id])
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }
}
