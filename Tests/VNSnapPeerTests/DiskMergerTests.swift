import Foundation
import Logging
import Testing
import VNSnapCore
import VNSnapHypervisor
import VNSnapImage

@testable import VNSnapPeer

/// Merging the layers of deleted snapshots on real qcow2 files with `qemu-img` (no VM runs on them here: the
/// running case is in `DiskMergeLiveTests`): what the guest would read stays the same, pins follow the files, a
/// damaged layer is never copied on, and a snapshot's disk still checks out after its chain was merged.
@Suite(.serialized) struct DiskMergerTests {
    let root = NSTemporaryDirectory() + "vnsnap-merge-\(UUID().uuidString.prefix(8))"
    var layers: DiskLayers { DiskLayers(directory: self.root + "/disks") }
    var directory: String { self.layers.directory("vm") }
    var base: String { self.root + "/base.qcow2" }

    func file(_ name: String) -> String { "\(self.directory)/\(name).qcow2" }

    /// base ← L1 ← L2 ← L3 ← A: the base holds 0x10 in its first 320 KiB, each layer above its own 64 KiB
    /// pattern over part of it; the frozen files pinned as a cut pins them.
    func makeChain() throws -> [String] {
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        try Shell.run(["qemu-img", "create", "-q", "-f", "qcow2", self.base, "4M"])
        try Shell.run(["qemu-io", "-c", "write -P 0x10 0 320k", self.base])
        var below = self.base
        var chain = [self.base]
        for (index, name) in ["L1", "L2", "L3", "A"].enumerated() {
            try Shell.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", below, "-F", "qcow2", self.file(name)])
            try Shell.run(["qemu-io", "-c", "write -P 0x\(index + 2)\(index + 2) \(index * 64)k 64k", self.file(name)])
            below = self.file(name)
            chain.append(below)
        }
        // What a cut records: every frozen file with its digest and parent.
        try DiskPins.update(directory: self.directory) { pins in
            for (index, path) in chain.enumerated().dropLast() {
                let found = try FileDigest.of(path, label: "test")
                pins.pins[path] = DiskPins.Pin(
                    format: "qcow2",
                    bytes: found.bytes,
                    digest: found.digest,
                    parent: index == 0 ? nil : chain[index - 1]
                )
            }
        }
        return chain
    }

    /// Reads the guest's view of `file` and checks each layer's pattern where it should be.
    func expectGuestView(_ file: String) throws {
        let output = try Shell.run([
            "qemu-io", "-r", "-c", "read -P 0x22 0 64k", "-c", "read -P 0x33 64k 64k", "-c", "read -P 0x44 128k 64k",
            "-c", "read -P 0x55 192k 64k", "-c", "read -P 0x10 256k 64k", "-c", "read -P 0 512k 64k", file,
        ])
        #expect(!output.contains("Pattern verification failed"), "\(output)")
    }

    func vm(pinned: Set<String>, active: String?) -> DiskMerger.VMDisk {
        DiskMerger.VMDisk(
            name: "vm",
            configured: VMDefinition.Disk(path: self.base, format: "qcow2"),
            monitor: nil,
            recordedActive: active,
            pinned: pinned
        )
    }

    func qcow2Files() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: self.directory)) ?? []).filter { $0.hasSuffix(".qcow2") }
            .sorted()
    }

    @Test func test_middleSnapshotsDeleted_theirLayersMergedIntoTheNextFrozenOne_guestViewAndPinsKept() async throws {
        defer { try? FileManager.default.removeItem(atPath: self.root) }
        _ = try self.makeChain()
        let merger = DiskMerger(layers: self.layers, logger: Logger(label: "test"))
        // Only the snapshot that froze L3 is left.
        let steps = await merger.pass([self.vm(pinned: [self.file("L3")], active: self.file("A"))]) { true }
        #expect(steps == 1)
        #expect(self.qcow2Files() == ["A.qcow2", "L3.qcow2"])
        #expect(try QEMUDisk.chain(ofFile: self.file("A")).map(\.path) == [self.file("A"), self.file("L3"), self.base])
        try self.expectGuestView(self.file("A"))
        let pins = try DiskPins.load(directory: self.directory)
        #expect(pins.pins[self.file("L3")]?.rewritten == true && pins.pins[self.file("L3")]?.parent == self.base)
        #expect(pins.pins[self.file("L1")] == nil && pins.pins[self.file("L2")] == nil)
        // The snapshot's disk checks out against the pins, whose chain changed under it.
        let chain = try QEMUDisk.chain(ofFile: self.file("L3"))
        #expect(try pins.check(chain, label: "test") == true)
        // Nothing left to do.
        #expect(await merger.pass([self.vm(pinned: [self.file("L3")], active: self.file("A"))]) { true } == 0)
    }

    @Test func test_everySnapshotDeleted_allLayersMergedIntoTheVMsOverlay_theConfiguredDiskUntouched() async throws {
        defer { try? FileManager.default.removeItem(atPath: self.root) }
        _ = try self.makeChain()
        let baseDigest = try FileDigest.of(self.base, label: "test")
        let merger = DiskMerger(layers: self.layers, logger: Logger(label: "test"))
        #expect(await merger.pass([self.vm(pinned: [], active: self.file("A"))]) { true } == 1)
        #expect(self.qcow2Files() == ["A.qcow2"])
        #expect(try QEMUDisk.chain(ofFile: self.file("A")).map(\.path) == [self.file("A"), self.base])
        try self.expectGuestView(self.file("A"))
        #expect(try FileDigest.of(self.base, label: "test") == baseDigest)
    }

    @Test func test_damagedLayer_notMerged_filesAndPinsLeftAsTheyWere() async throws {
        defer { try? FileManager.default.removeItem(atPath: self.root) }
        _ = try self.makeChain()
        // One flipped byte in L2's data (its last cluster holds L2's pattern).
        var bytes = [UInt8](try #require(FileManager.default.contents(atPath: self.file("L2"))))
        bytes[bytes.count - 100] ^= 0x01
        _ = FileManager.default.createFile(atPath: self.file("L2"), contents: Data(bytes))
        let before = try DiskPins.load(directory: self.directory).pins
        let merger = DiskMerger(layers: self.layers, logger: Logger(label: "test"))
        #expect(await merger.pass([self.vm(pinned: [self.file("L3")], active: self.file("A"))]) { true } == 0)
        #expect(self.qcow2Files() == ["A.qcow2", "L1.qcow2", "L2.qcow2", "L3.qcow2"])
        #expect(try DiskPins.load(directory: self.directory).pins == before)
    }

    @Test func test_peerBusy_noStepTaken() async throws {
        defer { try? FileManager.default.removeItem(atPath: self.root) }
        _ = try self.makeChain()
        let merger = DiskMerger(layers: self.layers, logger: Logger(label: "test"))
        #expect(await merger.pass([self.vm(pinned: [], active: self.file("A"))]) { false } == 0)
        #expect(self.qcow2Files().count == 4)
    }

    @Test func test_mergeInterruptedAfterTheCopy_nextPassPinsTheFileAnew() async throws {
        defer { try? FileManager.default.removeItem(atPath: self.root) }
        _ = try self.makeChain()
        // As a peer killed between the copy and the new pin leaves it: L3 marked, already resting on L1.
        try DiskPins.update(directory: self.directory) { pins in
            pins.pins[self.file("L3")]?.merging = DiskPins.Merging(dropping: [self.file("L2")], base: self.file("L1"))
        }
        try QEMUDisk.rebase(self.file("L3"), onto: VMDefinition.Disk(path: self.file("L1"), format: "qcow2"))
        let pinned: Set<String> = [self.file("L1"), self.file("L3")]
        let merger = DiskMerger(layers: self.layers, logger: Logger(label: "test"))
        _ = await merger.pass([self.vm(pinned: pinned, active: self.file("A"))]) { true }
        let pins = try DiskPins.load(directory: self.directory)
        #expect(pins.pins[self.file("L3")]?.merging == nil && pins.pins[self.file("L3")]?.rewritten == true)
        #expect(self.qcow2Files() == ["A.qcow2", "L1.qcow2", "L3.qcow2"])
        #expect(try pins.check(try QEMUDisk.chain(ofFile: self.file("A")).dropFirst().map { $0 }, label: "t") == true)
        try self.expectGuestView(self.file("A"))
    }
}
