import Foundation
import Testing
import VNSnapCore
import VNSnapImage

/// Chunks on disk: compressed, hashed, durable, verified before use; damage is named, never used.
@Suite struct LocalChunkStoreTests {
    let directory = NSTemporaryDirectory() + "vnsnap-chunks-\(UUID().uuidString.prefix(8))"

    func store() throws -> LocalChunkStore {
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        return LocalChunkStore(directory: self.directory, label: "snapshot 7, VM sink")
    }

    @Test func test_writeThenRead_roundTrips_andZerosCompress() throws {
        defer { try? FileManager.default.removeItem(atPath: self.directory) }
        let store = try self.store()
        var raw = [UInt8](repeating: 0, count: 1 << 20)
        for i in stride(from: 0, to: raw.count, by: 4096) { raw[i] = UInt8(truncatingIfNeeded: i / 4096) }
        let chunk = try store.write(index: 3, raw: raw)
        #expect(chunk.index == 3)
        #expect(chunk.rawBytes == UInt64(raw.count))
        #expect(chunk.storedBytes < chunk.rawBytes / 10, "a mostly-zero page image compresses")
        #expect(try store.read(chunk) == raw)
        #expect(store.path(of: 3).hasSuffix("/chunk-000003.zst"))
    }

    @Test func test_flippedByte_isRefusedNamingSnapshotVMAndChunk() throws {
        defer { try? FileManager.default.removeItem(atPath: self.directory) }
        let store = try self.store()
        let chunk = try store.write(index: 0, raw: Array("hello, snapshot".utf8))
        var stored = [UInt8](FileManager.default.contents(atPath: store.path(of: 0))!)
        stored[stored.count / 2] ^= 0x01
        try Data(stored).write(to: URL(fileURLWithPath: store.path(of: 0)))
        do {
            _ = try store.read(chunk)
            Issue.record("a corrupted chunk was used")
        } catch {
            #expect(error.code == .corrupt)
            #expect(error.message.hasPrefix("snapshot 7, VM sink, chunk 0:"), "\(error)")
        }
    }

    @Test func test_missingChunk_isRefused() throws {
        defer { try? FileManager.default.removeItem(atPath: self.directory) }
        let store = try self.store()
        let chunk = try store.write(index: 1, raw: [1, 2, 3])
        try FileManager.default.removeItem(atPath: store.path(of: 1))
        #expect(throws: ImageError(.missing, "snapshot 7, VM sink, chunk 1: \(store.path(of: 1)) is missing")) {
            try store.read(chunk)
        }
    }

    @Test func test_zstd_refusesDataThatDoesNotExpandToItsSize() {
        let compressed = Zstd.compress([UInt8](repeating: 7, count: 1000))
        #expect(throws: ImageError.self) { try Zstd.decompress(compressed, rawSize: 999) }
        #expect(throws: ImageError.self) { try Zstd.decompress([1, 2, 3, 4], rawSize: 10) }
    }
}
