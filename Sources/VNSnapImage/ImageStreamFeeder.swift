import Foundation
import VNSnapCore

#if canImport(Glibc)
import Glibc
#endif

/// Feeds a stored image, chunk by verified chunk, into a unix stream socket (where a restoring QEMU listens
/// for `migrate-incoming`). Blocking: run it off the event loops.
public enum ImageStreamFeeder {
    /// Checks the chunk list against the manifest's descriptor, then every chunk's hash; throws naming the
    /// first problem, before anything is used.
    public static func verify(
        _ chunks: [SnapshotManifest.ChunkDescriptor],
        against descriptor: SnapshotManifest.ImageDescriptor,
        in store: LocalChunkStore
    ) throws(ImageError) {
        try self.checkList(chunks, against: descriptor, label: store.label)
        for chunk in chunks { try store.verified(chunk) }
    }

    /// Checks only the chunk list (count, sizes, digest) against the manifest's descriptor.
    public static func checkList(
        _ chunks: [SnapshotManifest.ChunkDescriptor],
        against descriptor: SnapshotManifest.ImageDescriptor,
        label: String
    ) throws(ImageError) {
        guard chunks.count == descriptor.chunkCount, Self.digest(of: chunks) == descriptor.digest else {
            throw ImageError(
                .corrupt,
                "\(label): the chunk list (\(chunks.count) chunks) does not match the manifest (\(descriptor.chunkCount) chunks, digest \(descriptor.digest.prefix(16))…)"
            )
        }
    }

    /// The descriptor of a chunk list, for the manifest.
    public static func descriptor(of chunks: [SnapshotManifest.ChunkDescriptor]) -> SnapshotManifest.ImageDescriptor {
        SnapshotManifest.ImageDescriptor(
            chunkCount: chunks.count,
            rawBytes: chunks.reduce(0) { $0 + $1.rawBytes },
            storedBytes: chunks.reduce(0) { $0 + $1.storedBytes },
            digest: Self.digest(of: chunks)
        )
    }

    /// BLAKE2b-256 of a chunk list (`ImageDescriptor.digestInput`), hex.
    public static func digest(of chunks: [SnapshotManifest.ChunkDescriptor]) -> String {
        LocalChunkStore.hash(SnapshotManifest.ImageDescriptor.digestInput(chunks))
    }

    /// Connects to `socketPath` (retrying for up to `connectTimeout`) and writes every chunk, each verified
    /// again as it is read.
    public static func feed(
        _ chunks: [SnapshotManifest.ChunkDescriptor],
        from store: LocalChunkStore,
        to socketPath: String,
        connectTimeout: Duration = .seconds(10)
    ) throws(ImageError) {
        let deadline = ContinuousClock.now + connectTimeout
        var fd: Int32 = -1
        while true {
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            if fd >= 0, UnixSocketAddress.with(socketPath, { connect(fd, $0, $1) }) == 0 { break }
            if fd >= 0 { close(fd) }
            guard ContinuousClock.now < deadline else {
                throw ImageError(
                    .io,
                    "\(store.label): cannot connect to \(socketPath): \(String(cString: strerror(errno)))"
                )
            }
            usleep(20_000)
        }
        defer { close(fd) }
        for chunk in chunks {
            let bytes = try store.read(chunk)
            var offset = 0
            while offset < bytes.count {
                // !-safe, non-empty
                let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, bytes.count - offset) }
                if n < 0, errno == EINTR { continue }
                guard n > 0 else {
                    throw ImageError(
                        .io,
                        "\(store.label): writing to \(socketPath): \(String(cString: strerror(errno)))"
                    )
                }
                offset += n
            }
        }
    }
}

/// The stored form of a channel log: records of `length:u32 (big-endian) frame`, in arrival order.
public enum ChannelLogFormat {
    /// Encodes frames as records.
    public static func encode(_ frames: [[UInt8]]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(frames.reduce(0) { $0 + 4 + $1.count })
        for frame in frames {
            let n = UInt32(frame.count)
            bytes += [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)]
            bytes += frame
        }
        return bytes
    }

    /// Decodes records; a truncated record is refused.
    public static func decode(_ bytes: [UInt8], label: String) throws(ImageError) -> [[UInt8]] {
        var frames: [[UInt8]] = []
        var offset = 0
        while offset < bytes.count {
            guard offset + 4 <= bytes.count else { throw ImageError(.corrupt, "\(label): truncated record header") }
            let n = bytes[offset..<offset + 4].reduce(0) { ($0 << 8) | Int($1) }
            offset += 4
            guard offset + n <= bytes.count else { throw ImageError(.corrupt, "\(label): truncated frame record") }
            frames.append(Array(bytes[offset..<offset + n]))
            offset += n
        }
        return frames
    }
}
