/// Which stream of a VM an image is.
public enum ImageKind: String, Sendable, Hashable, Codable, CaseIterable {
    /// The VM's memory and device state.
    case memory
    /// The channel log: frames in flight toward the VM at the cut.
    case channel
}

/// One replica a store holds: an image of one VM of one snapshot.
public struct ReplicaKey: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The snapshot.
    public var snapshot: UInt64
    /// The VM.
    public var vm: String
    /// Which image of it.
    public var kind: ImageKind

    /// Creates a key.
    public init(snapshot: UInt64, vm: String, kind: ImageKind) {
        self.snapshot = snapshot
        self.vm = vm
        self.kind = kind
    }

    public var description: String {
        "snapshot \(self.snapshot), VM \(self.vm)\(self.kind == .channel ? ", channel log" : "")"
    }
}

/// One message of the image-store protocol (DESIGN §7), inside an encrypted TCP stream between a peer and a
/// `store` peer: replicas are put chunk by chunk (each acknowledged once verified and held in RAM), sealed
/// against the chunk list's digest, fetched for restores, and dropped when their snapshot goes.
public enum StoreMessage: Sendable, Hashable {
    /// Peer → store: open a replica of at most `bytes` stored bytes (the store reserves the room, or refuses).
    case put(ReplicaKey, bytes: UInt64)
    /// Peer → store: the next chunk of the open replica, as stored (compressed).
    case chunk(SnapshotManifest.ChunkDescriptor, data: [UInt8])
    /// Peer → store: the replica is complete: this many chunks, whose list has this digest.
    case seal(chunkCount: UInt32, digest: String)
    /// Peer → store: send every chunk of a replica.
    case get(ReplicaKey)
    /// Peer → store: forget every replica of a snapshot (deleted or aborted).
    case drop(snapshot: UInt64)
    /// Store → peer: the replica is open (or the drop done).
    case accepted
    /// Store → peer: it is not (no room, a replica of that key exists, not a store, ...).
    case refused(String)
    /// Store → peer: chunk `index` is held in RAM, its hash checked.
    case stored(index: UInt32)
    /// Store → peer: the replica is complete and matches its digest.
    case sealed
    /// Store → peer: one chunk of a fetched replica.
    case data(SnapshotManifest.ChunkDescriptor, data: [UInt8])
    /// Store → peer: the fetched replica ended after this many chunks.
    case end(chunkCount: UInt32)
    /// Store → peer: the request failed (a chunk that does not match its hash, a seal that does not match).
    case failed(String)
    /// Peer → store: which replicas of a snapshot do you hold, and where?
    case stat(snapshot: UInt64)
    /// Store → peer: the replicas of the snapshot asked about.
    case held([HeldReplica])
}

/// One replica as a store reports it: complete or not, in RAM, on disk.
public struct HeldReplica: Sendable, Hashable, Codable {
    /// Which image.
    public var key: ReplicaKey
    /// Complete and matching its digest.
    public var sealed: Bool
    /// Its chunks are in RAM.
    public var inRAM: Bool
    /// It is flushed to disk (fsync'd).
    public var onDisk: Bool

    /// Creates a report.
    public init(key: ReplicaKey, sealed: Bool, inRAM: Bool, onDisk: Bool) {
        self.key = key
        self.sealed = sealed
        self.inRAM = inRAM
        self.onDisk = onDisk
    }

    /// Where it is, for people: `RAM`, `disk`, `RAM and disk` (or `incomplete`).
    public var location: String {
        guard self.sealed else { return "incomplete" }
        switch (self.inRAM, self.onDisk) {
        case (true, true): return "RAM and disk"
        case (true, false): return "RAM"
        case (false, true): return "disk"
        case (false, false): return "nowhere"
        }
    }
}

/// The binary form of `StoreMessage` (big-endian; strings ≤ 255 bytes, chunk data ≤ `maximumChunkBytes`).
public enum StoreCodec {
    /// Format version carried in every message.
    public static let version: UInt8 = 1
    /// The largest chunk a message carries: a 4 MiB chunk zstd could not shrink, with room to spare.
    public static let maximumChunkBytes = 5 << 20

    /// Encodes a message.
    public static func encode(_ message: StoreMessage) throws(WireFailure) -> [UInt8] {
        var writer = WireWriter()
        writer.u8(Self.version)
        switch message {
        case .put(let key, let bytes):
            writer.u8(1)
            try Self.write(key, &writer)
            writer.u64(bytes)
        case .chunk(let chunk, let data):
            writer.u8(2)
            try Self.write(chunk, data, &writer)
        case .seal(let count, let digest):
            writer.u8(3)
            writer.u32(count)
            try writer.string(digest)
        case .get(let key):
            writer.u8(4)
            try Self.write(key, &writer)
        case .drop(let snapshot):
            writer.u8(5)
            writer.u64(snapshot)
        case .accepted:
            writer.u8(6)
        case .refused(let reason):
            writer.u8(7)
            try writer.string(SnapshotCodec.shortened(reason))
        case .stored(let index):
            writer.u8(8)
            writer.u32(index)
        case .sealed:
            writer.u8(9)
        case .data(let chunk, let data):
            writer.u8(10)
            try Self.write(chunk, data, &writer)
        case .end(let count):
            writer.u8(11)
            writer.u32(count)
        case .failed(let reason):
            writer.u8(12)
            try writer.string(SnapshotCodec.shortened(reason))
        case .stat(let snapshot):
            writer.u8(13)
            writer.u64(snapshot)
        case .held(let replicas):
            writer.u8(14)
            guard replicas.count <= 65_536 else { throw .oversized }
            writer.u32(UInt32(replicas.count))
            for replica in replicas {
                try Self.write(replica.key, &writer)
                writer.u8((replica.sealed ? 1 : 0) | (replica.inRAM ? 2 : 0) | (replica.onDisk ? 4 : 0))
            }
        }
        return writer.bytes
    }

    /// Decodes a message; malformed input throws, never crashes.
    public static func decode(_ bytes: [UInt8]) throws(WireFailure) -> StoreMessage {
        var reader = WireReader(bytes: bytes)
        guard try reader.u8() == Self.version else { throw .badVersion }
        let message: StoreMessage
        switch try reader.u8() {
        case 1: message = .put(try Self.readKey(&reader), bytes: try reader.u64())
        case 2:
            let (chunk, data) = try Self.readChunk(&reader)
            message = .chunk(chunk, data: data)
        case 3: message = .seal(chunkCount: try reader.u32(), digest: try reader.string())
        case 4: message = .get(try Self.readKey(&reader))
        case 5: message = .drop(snapshot: try reader.u64())
        case 6: message = .accepted
        case 7: message = .refused(try reader.string())
        case 8: message = .stored(index: try reader.u32())
        case 9: message = .sealed
        case 10:
            let (chunk, data) = try Self.readChunk(&reader)
            message = .data(chunk, data: data)
        case 11: message = .end(chunkCount: try reader.u32())
        case 12: message = .failed(try reader.string())
        case 13: message = .stat(snapshot: try reader.u64())
        case 14:
            var replicas: [HeldReplica] = []
            let count = try reader.u32()
            guard count <= 65_536 else { throw .oversized }
            for _ in 0..<Int(count) {
                let key = try Self.readKey(&reader)
                let flags = try reader.u8()
                guard flags < 8 else { throw .malformed }
                replicas.append(
                    HeldReplica(key: key, sealed: flags & 1 != 0, inRAM: flags & 2 != 0, onDisk: flags & 4 != 0)
                )
            }
            message = .held(replicas)
        default: throw .malformed
        }
        guard reader.offset == bytes.count else { throw .trailingBytes }
        return message
    }

    private static func write(_ key: ReplicaKey, _ writer: inout WireWriter) throws(WireFailure) {
        writer.u64(key.snapshot)
        try writer.string(key.vm)
        writer.u8(key.kind == .memory ? 1 : 2)
    }

    private static func readKey(_ reader: inout WireReader) throws(WireFailure) -> ReplicaKey {
        let snapshot = try reader.u64()
        let vm = try reader.string()
        let kind: ImageKind
        switch try reader.u8() {
        case 1: kind = .memory
        case 2: kind = .channel
        default: throw .malformed
        }
        return ReplicaKey(snapshot: snapshot, vm: vm, kind: kind)
    }

    private static func write(
        _ chunk: SnapshotManifest.ChunkDescriptor,
        _ data: [UInt8],
        _ writer: inout WireWriter
    ) throws(WireFailure) {
        guard data.count <= Self.maximumChunkBytes, chunk.index >= 0, chunk.index <= Int(UInt32.max) else {
            throw .oversized
        }
        writer.u32(UInt32(chunk.index))
        writer.u64(chunk.rawBytes)
        writer.u64(chunk.storedBytes)
        try writer.string(chunk.hash)
        writer.blob(data)
    }

    private static func readChunk(_ reader: inout WireReader) throws(WireFailure) -> (
        SnapshotManifest.ChunkDescriptor, [UInt8]
    ) {
        let index = Int(try reader.u32())
        let raw = try reader.u64()
        let stored = try reader.u64()
        let hash = try reader.string()
        let data = try reader.blob()
        guard data.count <= Self.maximumChunkBytes else { throw .oversized }
        return (SnapshotManifest.ChunkDescriptor(index: index, rawBytes: raw, storedBytes: stored, hash: hash), data)
    }
}
