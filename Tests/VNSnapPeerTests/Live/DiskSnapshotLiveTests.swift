import Foundation
import Testing
import VNSnapCore
import VNSnapPeer

#if canImport(Glibc)
import Glibc
#endif

/// A VM with a disk, on real guests across two real peers: its disk is frozen at the same pause as its memory
/// (the guest's `diskseq` checks every block against its in-memory counter, so a restored run finishes only
/// when disk and memory belong to one instant), the peer keeps the VM on its newest overlay across a restart,
/// and a damaged frozen disk stops a restore before any VM is touched.
@Suite(.serialized) struct DiskSnapshotLiveTests {
    static let blocks = 3_000

    /// Waits until the disk VM has written `blocks` blocks.
    func waitForBlocks(_ cluster: LiveCluster, atLeast blocks: Int) async throws {
        try await cluster.waitForSerialNumber(
            host: "h1",
            vm: "diskvm",
            after: "VNSNAP disk wrote=",
            atLeast: blocks,
            timeout: .seconds(180)
        )
    }

    /// The QEMU command line of `vm` on `host` (to see which disk file it runs on).
    func commandLine(_ cluster: LiveCluster, host: String, vm: String) async throws -> String {
        let pid = try #require(try await cluster.vmPIDs(host)[vm])
        let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data()
        return String(decoding: raw.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
    }

    @Test
    func
        test_vmWithDisk_snapshotsFreezeTheDiskAtThePause_restoredRunsFindDiskAndMemoryOfOneInstant_aRestartedPeerKeepsTheNewestOverlay_aDamagedDiskLayerStopsTheRestore()
        async throws
    {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let cluster = try LiveCluster(hosts: ["h1", "h2"])
        do {
            let (base, h1) = try cluster.startDiskPair(
                violin: "disks",
                vni: 44,
                macPrefix: "52:54:00:00:02",
                blocks: Self.blocks,
                pace: 5
            )
            try await self.waitForBlocks(cluster, atLeast: 500)
            // The first snapshot freezes the configured file itself; the second, the first one's overlay.
            let first = try await cluster.snapshot("h2", violin: "disks", mode: .cow, name: "disk-cow")
            let firstVM = try #require(first.vms.first { $0.name == "diskvm" })
            #expect(firstVM.disk?.map(\.path) == [base] && firstVM.diskBacking == nil)
            #expect(first.vms.first { $0.name == "idle" }?.disk == nil)
            try await self.waitForBlocks(cluster, atLeast: 1_200)
            let second = try await cluster.snapshot("h1", violin: "disks", mode: .precopy, name: "disk-precopy")
            let secondVM = try #require(second.vms.first { $0.name == "diskvm" })
            #expect(secondVM.disk?.count == 1 && secondVM.diskBacking?.files == 1, "\(secondVM)")
            #expect(secondVM.disk?.first?.path.contains("/data/disks/diskvm/snapshot-\(first.id)-") == true)

            // The live run, whose disk moved to new overlays twice, still checks out.
            let live = try await cluster.waitForSerial(
                host: "h1",
                vm: "diskvm",
                containing: "VNSNAP disk verdict=",
                timeout: .seconds(180)
            )
            #expect(live.contains("verdict=ok count=\(Self.blocks)"), "live run: \(live)")

            for manifest in [second, first] {
                try await cluster.restore("h2", id: manifest.id)
                let restored = try await cluster.waitForSerial(
                    host: "h1",
                    vm: "diskvm",
                    containing: "VNSNAP disk verdict=",
                    timeout: .seconds(180)
                )
                #expect(restored.contains("verdict=ok count=\(Self.blocks)"), "restored \(manifest.name): \(restored)")
            }

            // A restarted peer runs the VM on the overlay of the last restore, not on the frozen configured file.
            let before = try await self.commandLine(cluster, host: "h1", vm: "diskvm")
            #expect(before.contains("/data/disks/diskvm/restore-\(first.id)-"), "\(before)")
            cluster.signalPeer("h1", SIGTERM)
            try await cluster.waitForExit("h1")
            try cluster.startPeer("h1", config: cluster.diskConfig("h1", violin: "disks", vni: 44, vms: h1))
            _ = try await cluster.waitForSerial(
                host: "h1",
                vm: "diskvm",
                containing: "VNSNAP ready",
                timeout: .seconds(120)
            )
            let after = try await self.commandLine(cluster, host: "h1", vm: "diskvm")
            let overlay = before.split(separator: " ").first { $0.hasPrefix("file=") }
            #expect(overlay != nil && after.contains(overlay!), "before: \(before)\nafter: \(after)")

            // One flipped byte in the frozen configured disk: the restore stops in verify; no VM touched.
            try await cluster.waitUntil("h2", timeout: .seconds(60), "seeing h1 alive again") {
                LiveCluster.states($0)["h1"] == "alive"
            }
            let pids = [try await cluster.vmPIDs("h1"), try await cluster.vmPIDs("h2")]
            var bytes = [UInt8](try #require(FileManager.default.contents(atPath: base)))
            bytes[bytes.count - 100] ^= 0x01
            _ = FileManager.default.createFile(atPath: base, contents: Data(bytes))
            do {
                try await cluster.restore("h2", id: first.id)
                Issue.record("a restore from a damaged disk layer went through")
            } catch {
                let text = "\(error)"
                #expect(text.contains("snapshot \(first.id), VM diskvm: disk file \(base) does not match"), "\(text)")
            }
            // The same file is a backing file of the second snapshot's frozen image: refused too.
            do {
                try await cluster.restore("h2", id: second.id)
                Issue.record("a restore on a damaged backing file went through")
            } catch {
                #expect("\(error)".contains("disk file \(base) does not match"), "\(error)")
            }
            #expect([try await cluster.vmPIDs("h1"), try await cluster.vmPIDs("h2")] == pids, "no VM was touched")
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }
}
