import CSodium
import Foundation
import VNSnapCore

/// Where an image's chunks go once compressed and hashed: the local disk, or replicas on store peers. Called
/// from the image writer's own thread; `write` may block (that is the backpressure).
public protocol ChunkSink: Sendable {
    /// What the image is, for errors.
    var label: String { get }
    /// Takes one chunk, as stored.
    func write(_ chunk: SnapshotManifest.ChunkDescriptor, stored: [UInt8]) throws(ImageError)
    /// The stream ended with `chunks`: when this returns, every one of them is durable.
    func finish(_ chunks: [SnapshotManifest.ChunkDescriptor]) throws(ImageError)
    /// The stream failed or was cancelled: nothing more comes, and nothing is to be kept.
    func abandon()
}

/// The chunks of one image on the local disk (DESIGN §7): `chunk-NNNNNN.zst` files in one directory, each
/// compressed with zstd, sealed (`ChunkCipher`), hashed with BLAKE2b-256 and written durably; every read verifies
/// before use.
///
/// Blocking (file I/O, compression): call it from a thread pool, never from an event loop.
public struct LocalChunkStore: ChunkSink {
    /// Where the chunk files live.
    public let directory: String
    /// What the image is, for errors ("snapshot 7, VM sink").
    public let label: String
    /// Seals chunks written here and opens those read (`nil`: neither; a sealed chunk then cannot be read).
    public let cipher: ChunkCipher?

    /// A store in `directory`, sealing and opening its chunks with `cipher`.
    public init(directory: String, label: String, cipher: ChunkCipher? = nil) {
        self.directory = directory
        self.label = label
        self.cipher = cipher
    }

    /// The file of chunk `index`.
    public func path(of index: Int) -> String {
        let digits = String(index)
        return "\(self.directory)/chunk-\(String(repeating: "0", count: max(0, 6 - digits.count)))\(digits).zst"
    }

    /// Compresses, seals, hashes and durably writes one chunk; returns its descriptor for the manifest.
    public func write(index: Int, raw: [UInt8], level: Int32 = 1) throws(ImageError) -> SnapshotManifest.ChunkDescriptor
    {
        let (chunk, stored) = Self.compress(index: index, raw: raw, level: level, cipher: self.cipher)
        try self.writeStored(chunk, data: stored)
        return chunk
    }

    /// One chunk compressed, sealed with `cipher` and hashed, as stored and sent (blocking).
    public static func compress(index: Int, raw: [UInt8], level: Int32 = 1, cipher: ChunkCipher? = nil) -> (
        SnapshotManifest.ChunkDescriptor, [UInt8]
    ) {
        let compressed = Zstd.compress(raw, level: level)
        let stored = cipher?.seal(compressed, index: index) ?? compressed
        let chunk = SnapshotManifest.ChunkDescriptor(
            index: index,
            rawBytes: UInt64(raw.count),
            storedBytes: UInt64(stored.count),
            hash: Self.hash(stored)
        )
        return (chunk, stored)
    }

    /// Durably writes one chunk that is already compressed (a replica received from another peer).
    public func write(_ chunk: SnapshotManifest.ChunkDescriptor, stored: [UInt8]) throws(ImageError) {
        try self.writeStored(chunk, data: stored)
    }

    /// Every chunk was written durably as it came: nothing left to do.
    public func finish(_ chunks: [SnapshotManifest.ChunkDescriptor]) throws(ImageError) {}

    /// The snapshot's clean-up removes the files.
    public func abandon() {}

    /// Durably writes one chunk that is already compressed (a replica received from another peer).
    public func writeStored(_ chunk: SnapshotManifest.ChunkDescriptor, data: [UInt8]) throws(ImageError) {
        do {
            try DurableFile.write(data, to: self.path(of: chunk.index), mode: 0o600)
        } catch {
            throw ImageError(.io, "\(self.label), chunk \(chunk.index): \(error)")
        }
    }

    /// Reads one chunk, verifies its hash and size, opens it, and returns its raw bytes.
    public func read(_ chunk: SnapshotManifest.ChunkDescriptor) throws(ImageError) -> [UInt8] {
        let stored = try self.verified(chunk)
        let compressed: [UInt8]
        if let cipher = self.cipher {
            compressed = try cipher.open(stored, index: chunk.index, label: self.label)
        } else {
            guard ChunkCipher.keyID(of: stored) == nil else {
                throw ImageError(
                    .corrupt,
                    "\(self.label), chunk \(chunk.index): sealed, and no key was given to open it"
                )
            }
            compressed = stored
        }
        do {
            return try Zstd.decompress(compressed, rawSize: Int(chunk.rawBytes))
        } catch {
            throw ImageError(.corrupt, "\(self.label), chunk \(chunk.index): \(error.message)")
        }
    }

    /// Checks one chunk's stored bytes against its hash without decompressing; returns them.
    @discardableResult
    public func verified(_ chunk: SnapshotManifest.ChunkDescriptor) throws(ImageError) -> [UInt8] {
        let path = self.path(of: chunk.index)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ImageError(.missing, "\(self.label), chunk \(chunk.index): \(path) is missing")
        }
        let stored = [UInt8](data)
        guard stored.count == chunk.storedBytes, Self.hash(stored) == chunk.hash else {
            throw ImageError(.corrupt, "\(self.label), chunk \(chunk.index): \(path) does not match its hash")
        }
        return stored
    }

    /// BLAKE2b-256 of `bytes`, lowercase hex.
    public static func hash(_ bytes: [UInt8]) -> String {
        _ = sodium_init()
        var digest = [UInt8](repeating: 0, count: 32)
        _ = crypto_generichash(&digest, 32, bytes, UInt64(bytes.count), nil, 0)
        return digest.hexString
    }
}
