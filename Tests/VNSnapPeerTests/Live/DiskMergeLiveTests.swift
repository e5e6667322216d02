import Foundation
import Testing
import VNSnapCore
import VNSnapHypervisor
import VNSnapPeer

/// Disk chains merged as snapshots are deleted, on a real guest writing its disk the whole time: 20 snapshots,
/// most deleted as the next ones are taken, so `block-stream` jobs run into frozen layers and into the VM's own
/// overlay while it writes (and are stopped by the next cut, and taken up again). The guest's `diskseq` reads
/// every block back at the end, so a layer merged away wrongly shows as a lost block.
@Suite(.serialized) struct DiskMergeLiveTests {
    static let blocks = 10_000
    /// The snapshots left standing; the others are deleted.
    static let kept = [2, 8, 9, 17]

    /// The file the VM writes to, as its peer records it.
    func active(_ cluster: LiveCluster) throws -> String {
        let path = "\(cluster.host("h1").directory)/data/disks/diskvm/active.json"
        let data = try #require(FileManager.default.contents(atPath: path))
        let record = try JSONDecoder().decode([String: VMDefinition.Disk].self, from: data)
        return try #require(record["active"]?.path)
    }

    /// The qcow2 files in the VM's overlay directory.
    func files(_ cluster: LiveCluster) -> Set<String> {
        let directory = "\(cluster.host("h1").directory)/data/disks/diskvm"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return Set(names.filter { $0.hasSuffix(".qcow2") }.map { "\(directory)/\($0)" })
    }

    /// Waits until the VM's files are its kept snapshots' frozen files and the overlay it writes to, and it runs
    /// on exactly those; returns its chain.
    func waitForMerges(_ cluster: LiveCluster, frozen: [String], base: String) async throws -> [String] {
        let deadline = ContinuousClock.now + .seconds(180)
        var chain: [String] = []
        while ContinuousClock.now < deadline {
            let active = try self.active(cluster)
            chain = (try? QEMUDisk.chain(ofFile: active).map(\.path)) ?? []
            if chain == [active] + frozen.reversed() + [base],
                self.files(cluster) == Set([active] + frozen.filter { $0 != base })
            {
                return chain
            }
            try await Task.sleep(for: .seconds(1))
        }
        Issue.record("disk files not merged in 180 s: chain \(chain), files \(self.files(cluster).sorted())")
        return chain
    }

    @Test
    func
        test_twentySnapshotsOfAWritingVM_mostDeletedAsItWrites_layersMergedInto_theNextOne_chainKeepsOnlyTheKeptSnapshots_everyBlockReadBackLiveAndRestored()
        async throws
    {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let cluster = try LiveCluster(hosts: ["h1", "h2"])
        do {
            let (base, _) = try cluster.startDiskPair(
                violin: "merges",
                vni: 45,
                macPrefix: "52:54:00:00:03",
                blocks: Self.blocks,
                pace: 8
            )
            try await cluster.waitForSerialNumber(
                host: "h1",
                vm: "diskvm",
                after: "VNSNAP disk wrote=",
                atLeast: 100,
                timeout: .seconds(180)
            )
            // Each snapshot taken, then the one before it deleted unless it is kept: its layer goes into the new
            // snapshot's frozen layer while the VM writes above it.
            var manifests: [SnapshotManifest] = []
            // Which snapshots caught the guest still writing (a restore of one taken after its verdict has
            // nothing left to check).
            var writing: Set<Int> = []
            for index in 0..<20 {
                let host = index % 2 == 0 ? "h2" : "h1"
                let log =
                    (try? String(contentsOfFile: cluster.serialLog(host: "h1", vm: "diskvm"), encoding: .utf8)) ?? ""
                if !log.contains("VNSNAP disk verdict=") { writing.insert(index) }
                manifests.append(try await cluster.snapshot(host, violin: "merges", mode: .cow, name: "s\(index)"))
                if index >= 2, !Self.kept.contains(index - 1) {
                    _ = try await cluster.request("h2", ControlRequest(command: "delete", id: manifests[index - 1].id))
                }
            }
            // The newest (its layer goes into the VM's overlay) and the oldest (it froze the configured disk,
            // which is never rewritten).
            for index in [19, 0] {
                _ = try await cluster.request("h1", ControlRequest(command: "delete", id: manifests[index].id))
            }
            let frozen = try Self.kept.map { index in
                try #require(manifests[index].vms.first { $0.name == "diskvm" }?.disk?.first?.path)
            }
            let chain = try await self.waitForMerges(cluster, frozen: frozen, base: base)
            #expect(chain.count == Self.kept.count + 2, "\(chain)")

            let live = try await cluster.waitForSerial(
                host: "h1",
                vm: "diskvm",
                containing: "VNSNAP disk verdict=",
                timeout: .seconds(300)
            )
            #expect(live.contains("verdict=ok count=\(Self.blocks)"), "live run: \(live)")

            // Snapshots whose frozen layer took in the deleted ones' layers, restored: every block read back.
            let restored = [8, 17].filter { writing.contains($0) }
            #expect(restored.count == 2, "the guest finished writing before snapshots \([8, 17]) (a slow machine?)")
            for index in restored {
                try await cluster.restore("h2", id: manifests[index].id)
                let restored = try await cluster.waitForSerial(
                    host: "h1",
                    vm: "diskvm",
                    containing: "VNSNAP disk verdict=",
                    timeout: .seconds(300)
                )
                #expect(restored.contains("verdict=ok count=\(Self.blocks)"), "restored s\(index): \(restored)")
            }
            // The overlays the restores left behind are removed; the kept snapshots' files stay.
            _ = try await self.waitForMerges(cluster, frozen: frozen, base: base)
            let listed = try await cluster.list("h1").map(\.id)
            #expect(listed == Self.kept.map { manifests[$0].id }, "\(listed)")
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }
}
