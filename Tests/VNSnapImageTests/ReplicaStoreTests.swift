import Foundation
import Testing
import VNSnapCore
import VNSnapImage

/// A store's replicas: verified on receipt, durable in RAM once sealed, flushed to disk, found again after a
/// restart, bounded by the RAM budget (refused cleanly, room made by evicting what is on disk), dropped whole.
@Suite struct ReplicaStoreTests {
    let directory = NSTemporaryDirectory() + "vnsnap-replicas-\(UUID().uuidString.prefix(8))"
    static let key = ReplicaKey(snapshot: 7, vm: "sink", kind: .memory)
    static let mib: UInt64 = 1 << 20

    /// `count` chunks of about 100 kB each (compressed once, as a participant sends them).
    static func chunks(_ count: Int, seed: UInt8 = 1) -> [(SnapshotManifest.ChunkDescriptor, [UInt8])] {
        (0..<count).map { index in
            var state = UInt64(seed) &* 0x9e37_79b9 &+ UInt64(index)
            let raw = (0..<100_000).map { _ in
                state = state &* 6_364_136_223_846_793_005 &+ 1
                return UInt8(truncatingIfNeeded: state >> 56)
            }
            let stored = Zstd.compress(raw, level: 1)
            return (
                SnapshotManifest.ChunkDescriptor(
                    index: index,
                    rawBytes: UInt64(raw.count),
                    storedBytes: UInt64(stored.count),
                    hash: LocalChunkStore.hash(stored)
                ), stored
            )
        }
    }

    static func digest(_ chunks: [(SnapshotManifest.ChunkDescriptor, [UInt8])]) -> String {
        LocalChunkStore.hash(SnapshotManifest.ImageDescriptor.digestInput(chunks.map(\.0)))
    }

    func fill(_ store: ReplicaStore, _ key: ReplicaKey, _ chunks: [(SnapshotManifest.ChunkDescriptor, [UInt8])])
        throws
    {
        try store.open(key, bytes: chunks.reduce(0) { $0 + $1.0.storedBytes })
        for (chunk, data) in chunks { try store.put(key, chunk: chunk, data: data) }
        try store.seal(key, chunkCount: chunks.count, digest: Self.digest(chunks))
    }

    @Test func test_sealedReplica_isHeldInRAM_thenFlushed_andFoundAgainFromDiskAfterARestart() throws {
        defer { try? FileManager.default.removeItem(atPath: self.directory) }
        let chunks = Self.chunks(3)
        let store = ReplicaStore(directory: self.directory, ramBudget: 8 * Self.mib)
        try self.fill(store, Self.key, chunks)
        #expect(store.usage().replicas.map { [$0.sealed, $0.inRAM, $0.onDisk] } == [[true, true, false]])
        #expect(try store.chunks(Self.key).map(\.1) == chunks.map(\.1))
        #expect(try store.flush() == 1)
        #expect(store.usage().replicas.map { [$0.inRAM, $0.onDisk] } == [[true, true]])
        let restarted = ReplicaStore(directory: self.directory, ramBudget: 8 * Self.mib)
        #expect(restarted.usage().replicas.map { [$0.sealed, $0.inRAM, $0.onDisk] } == [[true, false, true]])
        #expect(try restarted.chunks(Self.key).map(\.1) == chunks.map(\.1))
    }

    @Test func test_noRoom_isRefusedNamingTheRoom_andReplicasOnDiskMakeRoomByLeavingRAM() throws {
        defer { try? FileManager.default.removeItem(atPath: self.directory) }
        let chunks = Self.chunks(3)
        let size = chunks.reduce(0) { $0 + $1.0.storedBytes }
        let store = ReplicaStore(directory: self.directory, ramBudget: size + size / 2)
        try self.fill(store, Self.key, chunks)
        let second = ReplicaKey(snapshot: 8, vm: "sink", kind: .memory)
        do {
            try store.open(second, bytes: size)
            Issue.record("a replica beyond the RAM budget was accepted")
        } catch {
            #expect(error.code == .noRoom && error.message.contains("MiB of RAM free"), "\(error)")
        }
        try store.flush()
        try store.open(second, bytes: size)
        #expect(store.usage().replicas.first { $0.key == Self.key }?.inRAM == false)
        #expect(try store.chunks(Self.key).map(\.1) == chunks.map(\.1), "served from disk")
        #expect(store.usage().ramUsed <= store.ramBudget)
    }

    @Test func test_badChunkOutOfOrderOrWrongSeal_isRefused_andAnAbandonedReplicaFreesItsRoom() throws {
        defer { try? FileManager.default.removeItem(atPath: self.directory) }
        let chunks = Self.chunks(2)
        let store = ReplicaStore(directory: self.directory, ramBudget: 8 * Self.mib)
        try store.open(Self.key, bytes: 4 * Self.mib)
        var damaged = chunks[0].1
        damaged[0] ^= 1
        #expect(throws: ImageError.self) { try store.put(Self.key, chunk: chunks[0].0, data: damaged) }
        #expect(throws: ImageError.self) { try store.put(Self.key, chunk: chunks[1].0, data: chunks[1].1) }
        try store.put(Self.key, chunk: chunks[0].0, data: chunks[0].1)
        #expect(throws: ImageError.self) { try store.seal(Self.key, chunkCount: 2, digest: Self.digest(chunks)) }
        #expect(throws: ImageError.self) { try store.open(Self.key, bytes: 1) }
        store.abandon(Self.key)
        #expect(store.usage().ramUsed == 0)
        #expect(throws: ImageError.self) { try store.chunks(Self.key) }
    }

    @Test func test_aReplicaThatCannotBeFlushed_staysInRAM_andDoesNotHoldUpTheOthers() throws {
        defer { try? FileManager.default.removeItem(atPath: self.directory) }
        let store = ReplicaStore(directory: self.directory, ramBudget: 8 * Self.mib)
        let other = ReplicaKey(snapshot: 9, vm: "sink", kind: .memory)
        try self.fill(store, Self.key, Self.chunks(1))
        try self.fill(store, other, Self.chunks(1, seed: 2))
        // A file where snapshot 7's directory must go: its flush fails, as on a broken disk.
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: "\(self.directory)/7", contents: Data([1]))
        #expect(throws: ImageError.self) { try store.flush() }
        let replicas = Dictionary(uniqueKeysWithValues: store.usage().replicas.map { ($0.key, $0) })
        #expect(replicas[other]?.onDisk == true)
        #expect(replicas[Self.key]?.onDisk == false && replicas[Self.key]?.inRAM == true)
        try FileManager.default.removeItem(atPath: "\(self.directory)/7")
        #expect(try store.flush() == 1)
        #expect(store.usage().replicas.allSatisfy { $0.onDisk })
    }

    @Test func test_dropOfASnapshot_removesItsReplicasFromRAMAndDisk_andADamagedFileIsNamed() throws {
        defer { try? FileManager.default.removeItem(atPath: self.directory) }
        let store = ReplicaStore(directory: self.directory, ramBudget: 8 * Self.mib)
        let other = ReplicaKey(snapshot: 9, vm: "sink", kind: .channel)
        try self.fill(store, Self.key, Self.chunks(2))
        try self.fill(store, other, Self.chunks(1, seed: 2))
        try store.flush()
        store.drop(snapshot: 7)
        #expect(store.usage().replicas.map(\.key) == [other])
        #expect(!FileManager.default.fileExists(atPath: "\(self.directory)/7"))
        let restarted = ReplicaStore(directory: self.directory, ramBudget: 8 * Self.mib)
        let file = "\(self.directory)/9/sink/channel/chunk-000000.zst"
        var bytes = [UInt8](try #require(FileManager.default.contents(atPath: file)))
        bytes[bytes.count / 2] ^= 1
        _ = FileManager.default.createFile(atPath: file, contents: Data(bytes))
        do {
            _ = try restarted.chunks(other)
            Issue.record("a damaged chunk on disk was served")
        } catch {
            #expect(error.code == .corrupt && error.message.contains("snapshot 9, VM sink, channel log, chunk 0"))
        }
    }

    @Test func test_restartAfterACrashMidFlush_removesTheIncompleteReplica_andKeepsTheWholeOnes() throws {
        defer { try? FileManager.default.removeItem(atPath: self.directory) }
        let store = ReplicaStore(directory: self.directory, ramBudget: 8 * Self.mib)
        try self.fill(store, Self.key, Self.chunks(2))
        #expect(try store.flush() == 1)
        #expect(store.discardedAtStart.isEmpty)
        // What a crash leaves: chunk files of a replica of the same snapshot (its channel log) and of another
        // snapshot, without their chunk lists.
        let files = FileManager.default
        for path in ["7/sink/channel", "8/relay/memory"] {
            try files.createDirectory(atPath: "\(self.directory)/\(path)", withIntermediateDirectories: true)
            try Data([1, 2, 3]).write(to: URL(fileURLWithPath: "\(self.directory)/\(path)/chunk-000000.zst"))
        }
        let restarted = ReplicaStore(directory: self.directory, ramBudget: 8 * Self.mib)
        #expect(restarted.discardedAtStart == ["7/sink/channel", "8/relay/memory"])
        #expect(!files.fileExists(atPath: "\(self.directory)/7/sink/channel"))
        #expect(!files.fileExists(atPath: "\(self.directory)/8"), "an emptied snapshot directory goes too")
        #expect(restarted.usage().replicas.map(\.key) == [Self.key], "the whole replica stays")
        #expect(try restarted.chunks(Self.key).count == 2)
    }
}
