import Foundation
import GRDB
import VNSnapCore

/// This peer's catalog of snapshots, images, chunks and replicas (DESIGN §7), and of who owns which VM (issue 14),
/// in SQLite.
///
/// A snapshot is `pending` from prepare until the initiator's commit or abort; `list` shows only `committed`
/// ones. The chunk lists of the images this peer holds are here (the manifest pins them with a digest).
/// Blocking (SQLite I/O): call it off the event loops.
public final class SnapshotCatalog: Sendable {
    /// One snapshot as `list` shows it.
    public struct Entry: Sendable, Hashable, Codable {
        /// Snapshot id.
        public var id: UInt64
        /// Operator's name for it.
        public var name: String
        /// The VIOLIN.
        public var violin: String
        /// The epoch its VMs moved to.
        public var epoch: UInt32
        /// How it was cut.
        public var mode: String
        /// `pending`, `committed`, `aborted` or `deleted` (a tombstone).
        public var state: String
        /// When it was created (wall clock, nanoseconds since 1970).
        public var createdAtNanoseconds: UInt64
        /// The manifest, once committed.
        public var manifest: SnapshotManifest?
        /// Why it was aborted.
        public var reason: String?
    }

    /// Which stream of a VM an image is.
    public typealias ImageKind = VNSnapCore.ImageKind

    /// An image this peer holds.
    public struct HeldImage: Sendable, Hashable {
        /// Where its chunk files are.
        public var directory: String
        /// Its chunks, in order.
        public var chunks: [SnapshotManifest.ChunkDescriptor]
    }

    let queue: DatabaseQueue
    /// The database file.
    public let path: String

    /// Opens (creating or migrating) the catalog at `path`; a damaged file is refused, naming it.
    public init(path: String) throws {
        self.path = path
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true
        )
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        do {
            self.queue = try DatabaseQueue(path: path, configuration: configuration)
            try Self.migrator.migrate(self.queue)
        } catch {
            throw SnapshotError(.failed, "cannot open the snapshot catalog \(path): \(error)")
        }
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE snapshots (
                        id INTEGER PRIMARY KEY, name TEXT NOT NULL, violin TEXT NOT NULL, epoch INTEGER NOT NULL,
                        term INTEGER NOT NULL, mode TEXT NOT NULL, state TEXT NOT NULL, createdAt INTEGER NOT NULL,
                        manifest BLOB, reason TEXT);
                    CREATE TABLE images (
                        snapshotID INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
                        vm TEXT NOT NULL, kind TEXT NOT NULL, directory TEXT NOT NULL, state TEXT NOT NULL,
                        PRIMARY KEY (snapshotID, vm, kind));
                    CREATE TABLE chunks (
                        snapshotID INTEGER NOT NULL, vm TEXT NOT NULL, kind TEXT NOT NULL, idx INTEGER NOT NULL,
                        rawBytes INTEGER NOT NULL, storedBytes INTEGER NOT NULL, hash TEXT NOT NULL,
                        PRIMARY KEY (snapshotID, vm, kind, idx),
                        FOREIGN KEY (snapshotID, vm, kind) REFERENCES images(snapshotID, vm, kind) ON DELETE CASCADE);
                    CREATE TABLE replicas (
                        snapshotID INTEGER NOT NULL, vm TEXT NOT NULL, kind TEXT NOT NULL, peer TEXT NOT NULL,
                        location TEXT NOT NULL, state TEXT NOT NULL,
                        PRIMARY KEY (snapshotID, vm, kind, peer),
                        FOREIGN KEY (snapshotID, vm, kind) REFERENCES images(snapshotID, vm, kind) ON DELETE CASCADE);
                    """
            )
        }
        migrator.registerMigration("v2-owners") { db in
            try db.execute(
                sql: """
                    CREATE TABLE owners (
                        vm TEXT PRIMARY KEY, violin TEXT NOT NULL, owner TEXT NOT NULL, generation INTEGER NOT NULL,
                        term INTEGER NOT NULL);
                    """
            )
        }
        return migrator
    }

    /// A snapshot this peer takes part in (or asked for) begins: `pending`.
    public func begin(_ key: SnapshotKey, name: String, mode: SnapshotMode, createdAtNanoseconds: UInt64) async throws {
        try await self.queue.write { db in
            try db.execute(
                sql: """
                    INSERT OR IGNORE INTO snapshots (id, name, violin, epoch, term, mode, state, createdAt)
                    VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)
                    """,
                arguments: [
                    Int64(bitPattern: key.id), name, key.violin, Int64(key.epoch), Int64(bitPattern: key.term),
                    mode.rawValue, Int64(bitPattern: createdAtNanoseconds),
                ]
            )
        }
    }

    /// An image is durable: its chunk list, where this peer keeps (or will fetch) its chunks, and who holds
    /// replicas of it (`disk` on a peer, or `ram` on a store peer). Refused once the snapshot is aborted or
    /// deleted: its rows would outlive it.
    public func recordImage(
        snapshot id: UInt64,
        vm: String,
        kind: ImageKind,
        replicas: [(peer: String, location: String)],
        directory: String,
        chunks: [SnapshotManifest.ChunkDescriptor]
    ) async throws {
        try await self.queue.write { db in
            let snapshotID = Int64(bitPattern: id)
            let state = try String.fetchOne(
                db,
                sql: "SELECT state FROM snapshots WHERE id = ?",
                arguments: [snapshotID]
            )
            if let state, state == "aborted" || state == "deleted" {
                throw SnapshotError(.failed, "snapshot \(id) is \(state): its images are not recorded")
            }
            try db.execute(
                sql:
                    "INSERT OR REPLACE INTO images (snapshotID, vm, kind, directory, state) VALUES (?, ?, ?, ?, 'durable')",
                arguments: [snapshotID, vm, kind.rawValue, directory]
            )
            try db.execute(
                sql: "DELETE FROM chunks WHERE snapshotID = ? AND vm = ? AND kind = ?",
                arguments: [snapshotID, vm, kind.rawValue]
            )
            for chunk in chunks {
                try db.execute(
                    sql:
                        "INSERT INTO chunks (snapshotID, vm, kind, idx, rawBytes, storedBytes, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    arguments: [
                        snapshotID, vm, kind.rawValue, chunk.index, Int64(chunk.rawBytes), Int64(chunk.storedBytes),
                        chunk.hash,
                    ]
                )
            }
            for replica in replicas {
                try db.execute(
                    sql:
                        "INSERT OR REPLACE INTO replicas (snapshotID, vm, kind, peer, location, state) VALUES (?, ?, ?, ?, ?, 'durable')",
                    arguments: [snapshotID, vm, kind.rawValue, replica.peer, replica.location]
                )
            }
        }
    }

    /// The snapshot is committed: it exists, with this manifest (stored as the initiator wrote it).
    public func commit(_ manifest: SnapshotManifest, document: Data) async throws {
        try await self.queue.write { db in
            try db.execute(
                sql: """
                    INSERT INTO snapshots (id, name, violin, epoch, term, mode, state, createdAt, manifest)
                    VALUES (?, ?, ?, ?, ?, ?, 'committed', ?, ?)
                    ON CONFLICT(id) DO UPDATE SET state = 'committed', manifest = excluded.manifest,
                        name = excluded.name, createdAt = excluded.createdAt
                    WHERE snapshots.state != 'deleted'
                    """,
                arguments: [
                    Int64(bitPattern: manifest.id), manifest.name, manifest.violin, Int64(manifest.epoch),
                    Int64(bitPattern: manifest.term), manifest.mode.rawValue,
                    Int64(bitPattern: manifest.createdAtNanoseconds), document,
                ]
            )
        }
    }

    /// The snapshot was aborted: its rows stay (state `aborted`, with why) but its images are forgotten; returns
    /// the directories to delete.
    @discardableResult
    public func abort(_ id: UInt64, reason: String) async throws -> [String] {
        try await self.queue.write { db in
            // A committed snapshot keeps its images (a stray abort must not wipe its chunk lists); a tombstone stays.
            let state = try String.fetchOne(
                db,
                sql: "SELECT state FROM snapshots WHERE id = ?",
                arguments: [Int64(bitPattern: id)]
            )
            guard state != "committed", state != "deleted" else { return [] }
            let directories = try Self.forgetImages(of: id, in: db)
            try db.execute(
                sql: "UPDATE snapshots SET state = 'aborted', reason = ? WHERE id = ?",
                arguments: [reason, Int64(bitPattern: id)]
            )
            return directories
        }
    }

    /// Deletes a snapshot: its images are forgotten and its row becomes a tombstone (state `deleted`, no
    /// manifest), so a peer that was down when it was deleted learns it from this one (catalog sync); returns the
    /// directories of its images to delete.
    @discardableResult
    public func delete(_ id: UInt64) async throws -> [String] {
        try await self.queue.write { db in
            let directories = try Self.forgetImages(of: id, in: db)
            try db.execute(
                sql: """
                    INSERT INTO snapshots (id, name, violin, epoch, term, mode, state, createdAt)
                    VALUES (?, '', '', 0, 0, '', 'deleted', ?)
                    ON CONFLICT(id) DO UPDATE SET state = 'deleted', manifest = NULL
                    """,
                arguments: [Int64(bitPattern: id), Int64(Date().timeIntervalSince1970 * 1_000_000_000)]
            )
            return directories
        }
    }

    /// Every snapshot id by state (`committed`, `deleted`, `aborted`, `pending`), newest first, at most `limit`
    /// of each: what catalog sync exchanges.
    public func states(limit: Int = 1_000) async throws -> [String: [UInt64]] {
        try await self.queue.read { db in
            var result: [String: [UInt64]] = [:]
            for state in ["committed", "deleted", "aborted", "pending"] {
                result[state] = try Int64.fetchAll(
                    db,
                    sql: "SELECT id FROM snapshots WHERE state = ? ORDER BY createdAt DESC LIMIT ?",
                    arguments: [state, limit]
                ).map { UInt64(bitPattern: $0) }
            }
            return result
        }
    }

    /// Deletes a snapshot's image rows (their chunks and replicas go with them); returns their directories.
    private static func forgetImages(of id: UInt64, in db: Database) throws -> [String] {
        let snapshotID = Int64(bitPattern: id)
        let directories = try String.fetchAll(
            db,
            sql: "SELECT directory FROM images WHERE snapshotID = ?",
            arguments: [snapshotID]
        )
        try db.execute(sql: "DELETE FROM images WHERE snapshotID = ?", arguments: [snapshotID])
        return directories
    }

    /// Committed snapshots, oldest first.
    public func list() async throws -> [Entry] {
        try await self.entries(where: "state = 'committed'", arguments: [])
    }

    /// One snapshot in any state, or `nil`.
    public func entry(_ id: UInt64) async throws -> Entry? {
        try await self.entries(where: "id = ?", arguments: [Int64(bitPattern: id)]).first
    }

    /// Snapshots left `pending` (a peer stopped in the middle of one).
    public func pending() async throws -> [Entry] {
        try await self.entries(where: "state = 'pending'", arguments: [])
    }

    private func entries(where condition: String, arguments: StatementArguments) async throws -> [Entry] {
        try await self.queue.read { db in
            try Row.fetchAll(
                db,
                sql: "SELECT * FROM snapshots WHERE \(condition) ORDER BY createdAt, id",
                arguments: arguments
            ).map { row in
                let document: Data? = row["manifest"]
                let id = UInt64(bitPattern: row["id"] as Int64)
                return Entry(
                    id: id,
                    name: row["name"],
                    violin: row["violin"],
                    epoch: UInt32(truncatingIfNeeded: row["epoch"] as Int64),
                    mode: row["mode"],
                    state: row["state"],
                    createdAtNanoseconds: UInt64(bitPattern: row["createdAt"] as Int64),
                    manifest: try document.map { try SnapshotManifest.decode($0, source: "catalog, snapshot \(id)") },
                    reason: row["reason"]
                )
            }
        }
    }

    /// An image this peer holds, or `nil`.
    public func image(snapshot id: UInt64, vm: String, kind: ImageKind) async throws -> HeldImage? {
        try await self.queue.read { db in
            let snapshotID = Int64(bitPattern: id)
            guard
                let directory = try String.fetchOne(
                    db,
                    sql: "SELECT directory FROM images WHERE snapshotID = ? AND vm = ? AND kind = ?",
                    arguments: [snapshotID, vm, kind.rawValue]
                )
            else { return nil }
            let chunks = try Row.fetchAll(
                db,
                sql: "SELECT * FROM chunks WHERE snapshotID = ? AND vm = ? AND kind = ? ORDER BY idx",
                arguments: [snapshotID, vm, kind.rawValue]
            ).map { row in
                SnapshotManifest.ChunkDescriptor(
                    index: row["idx"],
                    rawBytes: UInt64(row["rawBytes"] as Int64),
                    storedBytes: UInt64(row["storedBytes"] as Int64),
                    hash: row["hash"]
                )
            }
            return HeldImage(directory: directory, chunks: chunks)
        }
    }

    /// The highest epoch any snapshot of `violin` used here (the next one must go higher).
    public func highestEpoch(violin: String) async throws -> UInt32 {
        try await self.queue.read { db in
            UInt32(
                truncatingIfNeeded: try Int64.fetchOne(
                    db,
                    sql: "SELECT MAX(epoch) FROM snapshots WHERE violin = ?",
                    arguments: [violin]
                ) ?? 0
            )
        }
    }
}
