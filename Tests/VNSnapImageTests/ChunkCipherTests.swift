import Foundation
import Testing
import VNSnapCore
import VNSnapImage

/// Chunks sealed at rest: only the key opens them, only at their own place; unsealed ones read as before.
@Suite struct ChunkCipherTests {
    static let key = (0..<32).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
    static let other = (0..<32).map { UInt8(truncatingIfNeeded: $0 &* 11 &+ 3) }

    static func cipher(snapshot: UInt64 = 7, vm: String = "sink", kind: ImageKind = .memory, key: [UInt8] = key)
        -> ChunkCipher
    {
        ChunkCipher(snapshot: snapshot, vm: vm, kind: kind, sealing: (id: 0xA1B2_C3D4, bytes: key)) { id in
            id == 0xA1B2_C3D4 ? key : nil
        }
    }

    @Test func test_sealedChunk_opensAtItsPlace_andNowhereElse() throws {
        let compressed = Zstd.compress(Array(repeating: 42, count: 100_000) + Array(0..<200), level: 1)
        let cipher = Self.cipher()
        let sealed = cipher.seal(compressed, index: 3)
        #expect(sealed.count == compressed.count + ChunkCipher.overhead)
        #expect(ChunkCipher.keyID(of: sealed) == 0xA1B2_C3D4)
        #expect(ChunkCipher.keyID(of: compressed) == nil)
        #expect(try cipher.open(sealed, index: 3, label: "t") == compressed)
        // Two seals of one chunk differ (a fresh nonce each).
        #expect(cipher.seal(compressed, index: 3) != sealed)
        // Another index, VM, image kind, snapshot or key: refused.
        for (other, index) in [
            (cipher, 4), (Self.cipher(vm: "relay"), 3), (Self.cipher(kind: .channel), 3), (Self.cipher(snapshot: 8), 3),
            (Self.cipher(key: Self.other), 3),
        ] {
            #expect(throws: ImageError.self) { try other.open(sealed, index: index, label: "t") }
        }
        // Any byte changed: refused.
        for position in [0, 5, 12, 40, sealed.count - 1] {
            var damaged = sealed
            damaged[position] ^= 0x01
            #expect(throws: ImageError.self) { try cipher.open(damaged, index: 3, label: "t") }
        }
    }

    @Test func test_keyNoLongerInTheRing_isNamed_andAnUnsealedChunkReadsOnlyWhereSealingIsNotRequired() throws {
        let sealed = Self.cipher().seal([1, 2, 3], index: 0)
        let forgetful = ChunkCipher(snapshot: 7, vm: "sink", kind: .memory, sealing: nil) { _ in nil }
        do {
            _ = try forgetful.open(sealed, index: 0, label: "snapshot 7, VM sink")
            Issue.record("opened without its key")
        } catch {
            #expect(error.message.contains("a1b2c3d4") && error.message.contains("not in the keyring"), "\(error)")
        }
        // A chunk of a snapshot sealed at rest must be sealed; one written before sealing reads as it is.
        #expect(throws: ImageError.self) { try forgetful.open([9, 9, 9], index: 0, label: "t") }
        let legacy = ChunkCipher(
            snapshot: 7,
            vm: "sink",
            kind: .memory,
            sealing: nil,
            opening: { _ in nil },
            requireSealed: false
        )
        #expect(try legacy.open([9, 9, 9], index: 0, label: "t") == [9, 9, 9])
        #expect(legacy.seal([9, 9, 9], index: 0) == [9, 9, 9])
    }

    @Test func test_storeWithCipher_writesSealedFiles_readsThemBack_andAStoreWithoutItRefuses() throws {
        let directory = NSTemporaryDirectory() + "vnsnap-sealed-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = LocalChunkStore(directory: directory, label: "snapshot 7, VM sink", cipher: Self.cipher())
        let raw = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 % 251) }
        let chunk = try store.write(index: 0, raw: raw)
        let file = try [UInt8](Data(contentsOf: URL(fileURLWithPath: store.path(of: 0))))
        #expect(Array(file.prefix(4)) == ChunkCipher.magic)
        #expect(throws: ImageError.self) { try Zstd.decompress(file, rawSize: raw.count) }
        #expect(try store.read(chunk) == raw)
        #expect(try store.verified(chunk) == file, "the hash covers the sealed bytes: stores verify without the key")
        let keyless = LocalChunkStore(directory: directory, label: "snapshot 7, VM sink")
        #expect(throws: ImageError.self) { try keyless.read(chunk) }
    }
}
