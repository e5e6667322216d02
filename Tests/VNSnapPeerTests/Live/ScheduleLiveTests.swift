import Foundation
import Testing
import VNSnapCore
import VNSnapPeer

/// Scheduled snapshots on a real cluster: the initiator takes one per slot and the retention deletes the older ones
/// on every peer; `vnsnap-peer schedules` shows where the schedule stands.
@Suite(.serialized) struct ScheduleLiveTests {
    static let schedule = """

        [[schedules]]
        name = "every10"
        violin = "pipeline"
        every = "10s"
        keep_last = 2

        """

    @Test func test_scheduleEveryTenSeconds_takesOnePerSlot_andKeepsOnlyTheLastTwoOnEveryPeer() async throws {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let cluster = try LiveCluster(hosts: ["h1", "h2"])
        do {
            let configs = PipelineLiveTests.pipelineConfigs(cluster, blocks: 1_000_000, pace: 20)
            try cluster.startPeer("h1", config: configs["h1"]! + Self.schedule)
            try cluster.startPeer("h2", config: configs["h2"]! + Self.schedule)
            let schedule = SnapshotSchedule(
                name: "every10",
                violin: "pipeline",
                everySeconds: 10,
                mode: .cow,
                target: .disk,
                retention: SnapshotRetention(keepLast: 2)
            )
            func scheduled(_ entries: [SnapshotCatalog.Entry]) -> [SnapshotCatalog.Entry] {
                entries.filter { schedule.slot(ofSnapshotNamed: $0.name) != nil }
            }
            // Every scheduled snapshot seen, by id, until five have been taken.
            var seen: [UInt64: String] = [:]
            let deadline = ContinuousClock.now + .seconds(240)
            while seen.count < 5 {
                guard ContinuousClock.now < deadline else {
                    throw Shell.Failure(description: "only \(seen.count) scheduled snapshots in 240 s: \(seen)")
                }
                let listed = scheduled((try? await cluster.list("h1")) ?? [])
                // Between a commit and its prune the list may hold one more than the retention keeps.
                #expect(listed.count <= 3, "\(listed.map(\.name))")
                for entry in listed { seen[entry.id] = entry.name }
                try await Task.sleep(for: .milliseconds(500))
            }
            // One snapshot per slot, each in a slot of its own.
            let slots = seen.values.compactMap { schedule.slot(ofSnapshotNamed: $0) }
            #expect(Set(slots).count == seen.count, "\(seen.values.sorted())")
            #expect(slots.allSatisfy { $0 % 10 == 0 })

            // Once the retention has run, each peer lists only the newest two of those seen (or newer ones).
            let oldest = seen.sorted { $0.value < $1.value }.prefix(seen.count - 2).map(\.key)
            for host in ["h1", "h2"] {
                _ = try await cluster.waitUntilListed(host, "without the pruned snapshots \(oldest)") { entries in
                    Set(entries.map(\.id)).isDisjoint(with: oldest) && scheduled(entries).count <= 3
                }
            }
            // Their files go too, right after the catalog rows (on the thread pool, maybe behind the next slot's
            // compression).
            for host in ["h1", "h2"] {
                let directory = "\(cluster.host(host).directory)/data/snapshots"
                let pruned = Set(oldest.map { "\($0)" })
                var left: Set<String> = []
                let filesDeadline = ContinuousClock.now + .seconds(30)
                repeat {
                    left = Set((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
                        .intersection(pruned)
                    if left.isEmpty { break }
                    try await Task.sleep(for: .milliseconds(200))
                } while ContinuousClock.now < filesDeadline
                #expect(left.isEmpty, "\(host) keeps files of pruned snapshots 30 s after listing them gone")
            }

            let text = try await DaemonLiveTests.runBinary(["schedules", "--socket", cluster.controlSocket("h2")])
            #expect(
                text.status == 0 && text.output.contains("every10") && text.output.contains("last 2"),
                "\(text.output)"
            )
            #expect(text.output.contains("run by the initiator"), "\(text.output)")
            let json = try await DaemonLiveTests.runBinary([
                "schedules", "--json", "--socket", cluster.controlSocket("h1"),
            ])
            let statuses = try JSONDecoder().decode([ScheduleRunner.Status].self, from: Data(json.output.utf8))
            #expect(statuses.map(\.schedule.name) == ["every10"])
            #expect(statuses.first?.lastID != nil && (statuses.first?.snapshots ?? 0) >= 1)
        } catch {
            Issue.record("\(error)")
            for name in ["h1", "h2"] { print("--- \(name)\n\(cluster.peerLogSummary(name))") }
        }
        await cluster.teardown()
    }
}

extension LiveCluster {
    /// Polls `host`'s list until `condition` holds (60 s); returns it.
    @discardableResult
    func waitUntilListed(
        _ host: String,
        _ what: String,
        _ condition: ([SnapshotCatalog.Entry]) -> Bool
    ) async throws -> [SnapshotCatalog.Entry] {
        let deadline = ContinuousClock.now + .seconds(60)
        var last: [SnapshotCatalog.Entry] = []
        while ContinuousClock.now < deadline {
            if let entries = try? await self.list(host) {
                last = entries
                if condition(entries) { return entries }
            }
            try await Task.sleep(for: .milliseconds(300))
        }
        throw Shell.Failure(description: "\(host): not listed \(what) within 60 s: \(last.map(\.name))")
    }
}
