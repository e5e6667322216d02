import Foundation
import Testing
import VNSnapCore
import VNSnapPeer

/// The per-peer snapshot catalog in a real SQLite file.
@Suite struct SnapshotCatalogTests {
    func scratch() throws -> String {
        let directory = NSTemporaryDirectory() + "vnsnap-catalog-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    static let key = SnapshotKey(id: 42, violin: "pipeline", epoch: 3, term: 2)

    static func manifest(id: UInt64 = 42) -> SnapshotManifest {
        SnapshotManifest(
            key: SnapshotKey(id: id, violin: "pipeline", epoch: 3, term: 2),
            name: "halfway",
            vni: 42,
            mode: .cow,
            createdAtNanoseconds: 1_000,
            initiator: "h2",
            vms: [],
            channels: []
        )
    }

    @Test func test_pendingSnapshot_isNotListed_untilCommitted_andItsChunkListIsKeptInOrder() async throws {
        let directory = try self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let catalog = try SnapshotCatalog(path: directory + "/catalog.sqlite")
        try await catalog.begin(Self.key, name: "", mode: .cow, createdAtNanoseconds: 5)
        let chunks = (0..<3).map {
            SnapshotManifest.ChunkDescriptor(index: $0, rawBytes: 10, storedBytes: 4, hash: "h\($0)")
        }
        try await catalog.recordImage(
            snapshot: 42,
            vm: "sink",
            kind: .memory,
            replicas: [("h1", "disk")],
            directory: "/d/sink",
            chunks: chunks
        )
        #expect(try await catalog.list().isEmpty)
        #expect(try await catalog.pending().map(\.id) == [42])
        try await catalog.commit(Self.manifest(), document: try Self.manifest().encoded())
        // Reopened: everything was on disk.
        let reopened = try SnapshotCatalog(path: directory + "/catalog.sqlite")
        #expect(try await reopened.list().map(\.id) == [42])
        #expect(try await reopened.list().first?.manifest?.name == "halfway")
        #expect(try await reopened.image(snapshot: 42, vm: "sink", kind: .memory)?.chunks == chunks)
        #expect(try await reopened.image(snapshot: 42, vm: "sink", kind: .channel) == nil)
        #expect(try await reopened.highestEpoch(violin: "pipeline") == 3)
    }

    @Test func test_abort_forgetsTheImagesAndRefusesLaterOnes_aCommittedSnapshotStaysCommitted() async throws {
        let directory = try self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let catalog = try SnapshotCatalog(path: directory + "/catalog.sqlite")
        try await catalog.begin(Self.key, name: "", mode: .cow, createdAtNanoseconds: 5)
        try await catalog.recordImage(
            snapshot: 42,
            vm: "sink",
            kind: .memory,
            replicas: [("h1", "disk")],
            directory: "/d/sink",
            chunks: []
        )
        #expect(try await catalog.abort(42, reason: "h2 failed") == ["/d/sink"])
        #expect(try await catalog.entry(42)?.state == "aborted")
        #expect(try await catalog.entry(42)?.reason == "h2 failed")
        #expect(try await catalog.image(snapshot: 42, vm: "sink", kind: .memory) == nil)
        // A participant that finishes its images after the abort cannot bring rows back.
        await #expect(throws: SnapshotError.self) {
            try await catalog.recordImage(
                snapshot: 42,
                vm: "sink",
                kind: .channel,
                replicas: [("h1", "disk")],
                directory: "/d/sink",
                chunks: []
            )
        }
        #expect(try await catalog.image(snapshot: 42, vm: "sink", kind: .channel) == nil)
        let other = Self.manifest(id: 43)
        try await catalog.commit(other, document: try other.encoded())
        try await catalog.recordImage(
            snapshot: 43,
            vm: "sink",
            kind: .memory,
            replicas: [],
            directory: "/d/43",
            chunks: []
        )
        #expect(try await catalog.abort(43, reason: "late") == [], "a committed snapshot's images are not forgotten")
        #expect(try await catalog.entry(43)?.state == "committed")
        #expect(try await catalog.image(snapshot: 43, vm: "sink", kind: .memory) != nil)
        try await catalog.delete(43)
        #expect(try await catalog.entry(43)?.state == "deleted")
        #expect(try await catalog.entry(43)?.manifest == nil)
    }

    @Test func test_delete_leavesATombstone_thatALateCommitDoesNotRevive_andStatesListsEveryId() async throws {
        let directory = try self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let catalog = try SnapshotCatalog(path: directory + "/catalog.sqlite")
        let kept = Self.manifest(id: 7)
        try await catalog.commit(kept, document: try kept.encoded())
        // Deleted here before this peer ever heard of it (catalog sync): a tombstone all the same.
        try await catalog.delete(8)
        let late = Self.manifest(id: 8)
        try await catalog.commit(late, document: try late.encoded())
        #expect(
            try await catalog.entry(8)?.state == "deleted",
            "a commit arriving after the deletion must not revive it"
        )
        #expect(try await catalog.abort(8, reason: "stray") == [])
        #expect(try await catalog.entry(8)?.state == "deleted", "an abort does not turn a tombstone into an abort")
        #expect(try await catalog.list().map(\.id) == [7])
        try await catalog.begin(
            SnapshotKey(id: 9, violin: "pipeline", epoch: 4, term: 2),
            name: "",
            mode: .cow,
            createdAtNanoseconds: 1
        )
        try await catalog.abort(9, reason: "x")
        let states = try await catalog.states()
        #expect(
            states["committed"] == [7] && states["deleted"] == [8] && states["aborted"] == [9]
                && states["pending"] == []
        )
    }

    @Test func test_aFileThatIsNotACatalog_isRefusedNamingIt_andLeftAlone() async throws {
        let directory = try self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/catalog.sqlite"
        let garbage = Data("this is not a database, and it must survive being looked at".utf8)
        _ = FileManager.default.createFile(atPath: path, contents: garbage)
        #expect(
            performing: { try SnapshotCatalog(path: path) },
            throws: { error in
                "\(error)".contains(path)
            }
        )
        #expect(FileManager.default.contents(atPath: path) == garbage)
    }
}
