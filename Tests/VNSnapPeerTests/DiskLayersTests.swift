import Foundation
import Logging
import Testing
import VNSnapCore
import VNSnapImage

@testable import VNSnapPeer

/// The record of which overlay a VM's disk runs on: used for the configured disk it was made for, never
/// for another one.
@Suite struct DiskLayersTests {
    let directory = NSTemporaryDirectory() + "vnsnap-disks-\(UUID().uuidString.prefix(8))"
    let configured = VMDefinition.Disk(path: "/images/db.qcow2", format: "qcow2")

    func definition(disk: VMDefinition.Disk?) -> VMDefinition {
        VMDefinition(
            name: "db",
            violin: "v",
            mac: MACAddress("52:54:00:00:00:09")!,
            memoryMiB: 128,
            vcpus: 1,
            boot: .disk,
            disk: disk,
            accelerator: nil
        )
    }

    @Test func test_current_afterSetActive_runsTheVMOnTheRecordedOverlay() throws {
        defer { try? FileManager.default.removeItem(atPath: self.directory) }
        let layers = DiskLayers(directory: self.directory)
        let overlay = VMDefinition.Disk(path: layers.newOverlay("db", label: "snapshot-7"), format: "qcow2")
        try layers.setActive(overlay, vm: "db", configured: self.configured)
        let current = try layers.current(self.definition(disk: self.configured), logger: Logger(label: "test"))
        #expect(current.disk == overlay)
        #expect(overlay.path.hasPrefix(self.directory + "/db/snapshot-7-"))
    }

    @Test func test_current_recordForAnotherConfiguredDiskOrNoRecord_keepsTheConfiguredDisk() throws {
        defer { try? FileManager.default.removeItem(atPath: self.directory) }
        let layers = DiskLayers(directory: self.directory)
        let definition = self.definition(disk: self.configured)
        #expect(try layers.current(definition, logger: Logger(label: "test")).disk == self.configured)
        try layers.setActive(
            VMDefinition.Disk(path: "/elsewhere/overlay.qcow2", format: "qcow2"),
            vm: "db",
            configured: VMDefinition.Disk(path: "/images/old.qcow2", format: "qcow2")
        )
        #expect(try layers.current(definition, logger: Logger(label: "test")).disk == self.configured)
    }

    @Test func test_current_unreadableRecord_refusesNamingTheFile() throws {
        defer { try? FileManager.default.removeItem(atPath: self.directory) }
        let layers = DiskLayers(directory: self.directory)
        try FileManager.default.createDirectory(atPath: self.directory + "/db", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: self.directory + "/db/active.json", contents: Data("{".utf8))
        do {
            _ = try layers.current(self.definition(disk: self.configured), logger: Logger(label: "test"))
            Issue.record("an unreadable record let the VM start on its frozen configured disk")
        } catch {
            #expect(error.message.contains("\(self.directory)/db/active.json is unreadable"), "\(error)")
        }
    }

    @Test func test_fileDigest_equalsTheHashOfTheSameBytes_andAMissingFileIsNamed() throws {
        defer { try? FileManager.default.removeItem(atPath: self.directory) }
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        // Larger than one read, so the streaming digest spans pieces.
        let bytes = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        _ = FileManager.default.createFile(atPath: self.directory + "/layer", contents: Data(bytes))
        let found = try FileDigest.of(self.directory + "/layer", label: "layer")
        #expect(found.bytes == UInt64(bytes.count))
        #expect(found.digest == LocalChunkStore.hash(bytes))
        #expect(throws: ImageError.self) { try FileDigest.of(self.directory + "/nope", label: "snapshot 7, VM db") }
    }
}
