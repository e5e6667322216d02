import Foundation
import Synchronization
import VNSnapCore

/// A `store` peer's replicas (DESIGN §7, VNsnap-memory): each chunk is checked against its hash and held in RAM
/// on receipt (a replica is durable once sealed there), then flushed to disk with fsync in the background.
///
/// RAM is bounded by `ramBudget`: opening a replica reserves room for its largest size, and is refused when
/// the room is not there even after evicting replicas already safe on disk, so a store under memory pressure
/// refuses new replicas cleanly instead of growing. Thread-safe; the file work (`flush`, reads from disk) is
/// blocking: run it off event loops.
public final class ReplicaStore: Sendable {
    /// One replica as `status` and `show` see it.
    public struct Replica: Sendable, Hashable, Codable {
        /// Which image.
        public var key: ReplicaKey
        /// Its chunks so far.
        public var chunks: Int
        /// Their stored bytes.
        public var storedBytes: UInt64
        /// Whether it is complete and matched its digest.
        public var sealed: Bool
        /// Whether its chunks are in RAM.
        public var inRAM: Bool
        /// Whether it is flushed to disk (fsync'd).
        public var onDisk: Bool
    }

    /// RAM and disk use.
    public struct Usage: Sendable, Hashable, Codable {
        /// The RAM budget.
        public var ramBudget: UInt64
        /// RAM taken by chunks held and by reservations of open replicas.
        public var ramUsed: UInt64
        /// Stored bytes on disk.
        public var diskBytes: UInt64
        /// Every replica.
        public var replicas: [Replica]
    }

    private struct Entry {
        var chunks: [SnapshotManifest.ChunkDescriptor] = []
        var data: [Int: [UInt8]] = [:]
        /// Room reserved beyond the chunks held (shrinks as chunks arrive; gone once sealed).
        var reserved: UInt64
        var sealed = false
        var onDisk = false
        var heldBytes: UInt64 { self.data.values.reduce(0) { $0 + UInt64($1.count) } }
    }

    private struct State {
        var entries: [ReplicaKey: Entry] = [:]
        /// Sealed replicas waiting for their flush, oldest first.
        var unflushed: [ReplicaKey] = []
        var ramUsed: UInt64 {
            self.entries.values.reduce(0) { $0 + $1.heldBytes + $1.reserved }
        }
    }

    /// Where flushed replicas live: `directory/SNAPSHOT/VM/KIND/`.
    public let directory: String
    /// Bytes of RAM replicas may take.
    public let ramBudget: UInt64
    private let state = Mutex(State())
    /// One flush at a time (the background flusher and the one at shutdown).
    private let flushing = Mutex(())

    /// Replicas found incomplete on disk at start (no chunk list: an upload or a flush cut short by a crash) and
    /// removed, as `SNAPSHOT/VM/KIND`.
    public let discardedAtStart: [String]

    /// A store keeping at most `ramBudget` bytes in RAM, flushing into `directory`. Replicas already on disk
    /// there (from before a restart) are found again; incomplete ones are removed (nothing would ever read or drop
    /// them: a store only knows replicas by their chunk lists).
    public init(directory: String, ramBudget: UInt64) {
        self.directory = directory
        self.ramBudget = ramBudget
        let (found, incomplete) = Self.scan(directory)
        for path in incomplete {
            try? FileManager.default.removeItem(atPath: "\(directory)/\(path)")
            // Its VM's and snapshot's directories too, when nothing else is left in them (rmdir only takes empty ones).
            let parts = path.split(separator: "/")
            rmdir("\(directory)/\(parts[0])/\(parts[1])")
            rmdir("\(directory)/\(parts[0])")
        }
        self.discardedAtStart = incomplete
        self.state.withLock { state in
            for (key, chunks) in found {
                state.entries[key] = Entry(chunks: chunks, reserved: 0, sealed: true, onDisk: true)
            }
        }
    }

    /// Opens a replica of at most `bytes` stored bytes, reserving that much RAM (evicting replicas already on
    /// disk if needed); refuses when there is no room or the replica exists.
    public func open(_ key: ReplicaKey, bytes: UInt64) throws(ImageError) {
        try self.state.withLock { (state: inout State) throws(ImageError) in
            guard state.entries[key] == nil else { throw ImageError(.io, "\(key): this store already holds it") }
            var free = self.ramBudget > state.ramUsed ? self.ramBudget - state.ramUsed : 0
            // Replicas safe on disk leave RAM first, oldest snapshot first (!-safe below: its own keys).
            for evictable in state.entries.keys.sorted(by: { $0.snapshot < $1.snapshot })
            where free < bytes && state.entries[evictable]!.onDisk && !state.entries[evictable]!.data.isEmpty {
                free += state.entries[evictable]!.heldBytes  // !-safe
                state.entries[evictable]!.data = [:]  // !-safe
            }
            guard free >= bytes else {
                throw ImageError(
                    .noRoom,
                    "\(key): the store has \(ByteCount.mebibytes(free)) MiB of RAM free, the replica needs \(ByteCount.mebibytes(bytes)) MiB"
                )
            }
            state.entries[key] = Entry(reserved: bytes)
        }
    }

    /// Takes the next chunk of an open replica, after checking it against its hash.
    public func put(_ key: ReplicaKey, chunk: SnapshotManifest.ChunkDescriptor, data: [UInt8]) throws(ImageError) {
        guard UInt64(data.count) == chunk.storedBytes, LocalChunkStore.hash(data) == chunk.hash else {
            throw ImageError(.corrupt, "\(key), chunk \(chunk.index): does not match its hash")
        }
        try self.state.withLock { (state: inout State) throws(ImageError) in
            guard var entry = state.entries[key], !entry.sealed else {
                throw ImageError(.missing, "\(key): no open replica")
            }
            guard chunk.index == entry.chunks.count else {
                throw ImageError(.corrupt, "\(key): chunk \(chunk.index) arrived, chunk \(entry.chunks.count) expected")
            }
            guard UInt64(data.count) <= entry.reserved else {
                throw ImageError(.noRoom, "\(key): larger than the room reserved for it")
            }
            entry.reserved -= UInt64(data.count)
            entry.chunks.append(chunk)
            entry.data[chunk.index] = data
            state.entries[key] = entry
        }
    }

    /// Completes a replica: its chunk list must have `digest` (`ImageStreamFeeder.digest`); it is then durable
    /// in RAM and queued for its flush to disk.
    public func seal(_ key: ReplicaKey, chunkCount: Int, digest: String) throws(ImageError) {
        try self.state.withLock { (state: inout State) throws(ImageError) in
            guard var entry = state.entries[key], !entry.sealed else {
                throw ImageError(.missing, "\(key): no open replica")
            }
            guard entry.chunks.count == chunkCount, ImageStreamFeeder.digest(of: entry.chunks) == digest else {
                throw ImageError(.corrupt, "\(key): \(entry.chunks.count) chunks received do not match the sealed list")
            }
            entry.sealed = true
            entry.reserved = 0
            state.entries[key] = entry
            state.unflushed.append(key)
        }
    }

    /// Forgets a replica that will not be completed (its stream broke, its snapshot aborted).
    public func abandon(_ key: ReplicaKey) {
        self.state.withLock { state in
            if state.entries[key]?.sealed == false { state.entries[key] = nil }
        }
    }

    /// Forgets every replica of `snapshot`, in RAM and on disk.
    public func drop(snapshot: UInt64) {
        self.state.withLock { state in
            state.entries = state.entries.filter { $0.key.snapshot != snapshot }
            state.unflushed.removeAll { $0.snapshot == snapshot }
        }
        try? FileManager.default.removeItem(atPath: "\(self.directory)/\(snapshot)")
    }

    /// Flushes every sealed replica not yet on disk (chunks fsync'd, then the chunk list); returns how many.
    /// One that cannot be written (a full disk) stays in RAM, queued behind the others, and the first such
    /// failure is thrown after the others were tried. Blocking: the store's background flusher calls it.
    @discardableResult
    public func flush() throws(ImageError) -> Int {
        try self.flushing.withLock { _ throws(ImageError) in
            var (flushed, failure): (Int, ImageError?) = (0, nil)
            for key in self.state.withLock({ $0.unflushed }) {
                guard let (chunks, data) = self.state.withLock({ $0.entries[key].map { ($0.chunks, $0.data) } }) else {
                    continue
                }
                do throws(ImageError) {
                    try self.write(key, chunks, data)
                } catch {
                    failure = failure ?? error
                    self.state.withLock { state in
                        guard state.unflushed.contains(key) else { return }
                        state.unflushed.removeAll { $0 == key }
                        state.unflushed.append(key)
                    }
                    continue
                }
                let dropped = self.state.withLock { state in
                    state.unflushed.removeAll { $0 == key }
                    state.entries[key]?.onDisk = true
                    return state.entries[key] == nil
                }
                // A drop while flushing wins: the files go too.
                if dropped { try? FileManager.default.removeItem(atPath: self.chunkStore(key).directory) }
                flushed += 1
            }
            if let failure { throw failure }
            return flushed
        }
    }

    private func write(_ key: ReplicaKey, _ chunks: [SnapshotManifest.ChunkDescriptor], _ data: [Int: [UInt8]])
        throws(ImageError)
    {
        let store = self.chunkStore(key)
        do {
            try FileManager.default.createDirectory(atPath: store.directory, withIntermediateDirectories: true)
            for chunk in chunks {
                guard let bytes = data[chunk.index] else { continue }
                try store.writeStored(chunk, data: bytes)
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            try DurableFile.write(Array(try encoder.encode(chunks)), to: "\(store.directory)/chunks.json")
        } catch {
            throw ImageError(.io, "\(key): flushing to \(store.directory): \(error)")
        }
    }

    /// A sealed replica's chunk list.
    public func chunkList(_ key: ReplicaKey) throws(ImageError) -> [SnapshotManifest.ChunkDescriptor] {
        guard let entry = self.state.withLock({ $0.entries[key] }), entry.sealed else {
            throw ImageError(.missing, "\(key): this store holds no complete replica of it")
        }
        return entry.chunks
    }

    /// One chunk of a sealed replica, checked against its hash, from RAM or else from disk (blocking).
    public func chunk(_ key: ReplicaKey, _ chunk: SnapshotManifest.ChunkDescriptor) throws(ImageError) -> [UInt8] {
        if let bytes = self.state.withLock({ $0.entries[key]?.data[chunk.index] }),
            LocalChunkStore.hash(bytes) == chunk.hash
        {
            return bytes
        }
        return try self.chunkStore(key).verified(chunk)
    }

    /// A sealed replica's chunks, each checked against its hash (all in memory: for tests and small images).
    public func chunks(_ key: ReplicaKey) throws(ImageError) -> [(SnapshotManifest.ChunkDescriptor, [UInt8])] {
        try self.chunkList(key).map { chunk throws(ImageError) in (chunk, try self.chunk(key, chunk)) }
    }

    /// RAM and disk use, and every replica.
    public func usage() -> Usage {
        self.state.withLock { state in
            Usage(
                ramBudget: self.ramBudget,
                ramUsed: state.ramUsed,
                diskBytes: state.entries.values.filter(\.onDisk).reduce(0) {
                    $0 + $1.chunks.reduce(0) { $0 + $1.storedBytes }
                },
                replicas: state.entries.map { key, entry in
                    Replica(
                        key: key,
                        chunks: entry.chunks.count,
                        storedBytes: entry.chunks.reduce(0) { $0 + $1.storedBytes },
                        sealed: entry.sealed,
                        inRAM: !entry.data.isEmpty,
                        onDisk: entry.onDisk
                    )
                }.sorted {
                    ($0.key.snapshot, $0.key.vm, $0.key.kind.rawValue) < (
                        $1.key.snapshot, $1.key.vm, $1.key.kind.rawValue
                    )
                }
            )
        }
    }

    private func chunkStore(_ key: ReplicaKey) -> LocalChunkStore {
        LocalChunkStore(
            directory: "\(self.directory)/\(key.snapshot)/\(key.vm)/\(key.kind.rawValue)",
            label: "\(key)"
        )
    }

    /// Replicas flushed before a restart: every `SNAPSHOT/VM/KIND/chunks.json` under `directory`; and the
    /// `SNAPSHOT/VM/KIND` directories without a readable one (incomplete).
    private static func scan(_ directory: String) -> (
        found: [ReplicaKey: [SnapshotManifest.ChunkDescriptor]], incomplete: [String]
    ) {
        var found: [ReplicaKey: [SnapshotManifest.ChunkDescriptor]] = [:]
        var incomplete: [String] = []
        let files = FileManager.default
        for snapshot in (try? files.contentsOfDirectory(atPath: directory)) ?? [] {
            guard let id = UInt64(snapshot) else { continue }
            for vm in (try? files.contentsOfDirectory(atPath: "\(directory)/\(snapshot)")) ?? [] {
                for kind in ImageKind.allCases {
                    let path = "\(snapshot)/\(vm)/\(kind.rawValue)"
                    var isDirectory: ObjCBool = false
                    guard files.fileExists(atPath: "\(directory)/\(path)", isDirectory: &isDirectory),
                        isDirectory.boolValue
                    else { continue }
                    guard let data = files.contents(atPath: "\(directory)/\(path)/chunks.json"),
                        let chunks = try? JSONDecoder().decode([SnapshotManifest.ChunkDescriptor].self, from: data)
                    else {
                        incomplete.append(path)
                        continue
                    }
                    found[ReplicaKey(snapshot: id, vm: vm, kind: kind)] = chunks
                }
            }
        }
        return (found, incomplete.sorted())
    }

}
