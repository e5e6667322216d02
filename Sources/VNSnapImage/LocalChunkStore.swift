import CSodium
import Foundation
import VNSnapCore

/// The chunks of one image on the local disk (DESIGN §7): `chunk-NNNNNN.zst` files in one directory, each
/// compressed with zstd, hashed with BLAKE2b-256 and written durably; every read verifies before use.
///
/// Blocking (file I/O, compression): call it from a thread pool, never from an event loop.
public struct LocalChunkStore: Sendable {
    /// Where the chunk files live.
    public let directory: String
    /// What the image is, for errors ("snapshot 7, VM sink").
    public let label: String

    /// A store in `directory`.
    public init(directory: String, label: String) {
        self.directory = directory
        self.label = label
    }

    /// The file of chunk `index`.
    public func path(of index: Int) -> String {
        let digits = String(index)
        return "\(self.directory)/chunk-\(String(repeating: "0", count: max(0, 6 - digits.count)))\(digits).zst"
    }

    /// Compresses, hashes and durably writes one chunk; returns its descriptor for the manifest.
    public func write(index: Int, raw: [UInt8], level: Int32 = 1) throws(ImageError) -> SnapshotManifest.ChunkDescriptor
    {
        let stored = Zstd.compress(raw, level: level)
        do {
            try DurableFile.write(stored, to: self.path(of: index), mode: 0o600)
        } catch {
            throw ImageError(.io, "\(self.label), chunk \(index): \(error)")
        }
        return SnapshotManifest.ChunkDescriptor(
            index: index,
            rawBytes: UInt64(raw.count),
            storedBytes: UInt64(stored.count),
            hash: Self.hash(stored)
        )
    }

    /// Reads one chunk, verifies its hash and size, and returns its raw bytes.
    public func read(_ chunk: SnapshotManifest.ChunkDescriptor) throws(ImageError) -> [UInt8] {
        let stored = try self.verified(chunk)
        do {
            return try Zstd.decompress(stored, rawSize: Int(chunk.rawBytes))
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
