import ArgumentParser
import Foundation
import VNSnapCore
import VNSnapImage

#if canImport(Glibc)
import Glibc
#endif

/// `vnsnap-bench image-writer FILE`: the image pipeline alone (socket → chunks → zstd → BLAKE2b → fsync'd
/// files), fed a saved stream as fast as a socket takes it, unsealed and sealed at rest (XChaCha20-Poly1305) in
/// turn each round, next to compressing the same bytes with zstd -1.
struct ImageWriterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image-writer",
        abstract:
            "Time the image writer on a saved stream, next to bare zstd -1 (library, one thread) on the same bytes."
    )

    @Argument(help: "A saved raw stream (e.g. a VM's QEMU migration stream).") var file: String
    @Option(help: "Where the chunk files go (a directory on the disk to measure).") var directory =
        "/tmp/vnsnap-bench-image"
    @Option(help: "Rounds (medians are printed).") var rounds = 3

    func run() async throws {
        guard let data = FileManager.default.contents(atPath: self.file) else {
            throw ValidationError("cannot read \(self.file)")
        }
        let stream = [UInt8](data)
        var writerRates: [Double] = []
        var sealedRates: [Double] = []
        var zstdRates: [Double] = []
        var key = [UInt8](repeating: 0, count: 32)
        for index in key.indices { key[index] = UInt8(truncatingIfNeeded: index &* 131 &+ 7) }
        let cipher = ChunkCipher(
            snapshot: 1,
            vm: "bench",
            kind: .memory,
            sealing: (id: 1, bytes: key),
            opening: { [key] _ in key }
        )
        for _ in 0..<self.rounds {
            for sealed in [false, true] {
                try? FileManager.default.removeItem(atPath: self.directory)
                try FileManager.default.createDirectory(
                    atPath: self.directory + "/chunks",
                    withIntermediateDirectories: true
                )
                let store = LocalChunkStore(directory: self.directory + "/chunks", label: "bench")
                let writer = try ImageStreamWriter(
                    socketPath: self.directory + "/in.sock",
                    store: store,
                    cipher: sealed ? cipher : nil
                )
                let started = ContinuousClock.now
                try Self.send(stream, to: writer.socketPath)
                _ = try await writer.wait(timeout: .seconds(600))
                let rate = Double(stream.count) / started.duration(to: .now).inSeconds / 1e6
                if sealed { sealedRates.append(rate) } else { writerRates.append(rate) }
            }
            let zstdStarted = ContinuousClock.now
            for start in stride(from: 0, to: stream.count, by: 4 << 20) {
                _ = Zstd.compress(Array(stream[start..<min(stream.count, start + (4 << 20))]), level: 1)
            }
            zstdRates.append(Double(stream.count) / zstdStarted.duration(to: .now).inSeconds / 1e6)
        }
        try? FileManager.default.removeItem(atPath: self.directory)
        let writer = writerRates.sorted()[writerRates.count / 2]
        let sealed = sealedRates.sorted()[sealedRates.count / 2]
        let zstd = zstdRates.sorted()[zstdRates.count / 2]
        print(
            String(
                format:
                    "image writer %.0f MB/s, sealed at rest %.0f MB/s (%.1f %% slower), zstd -1 alone %.0f MB/s (same 4 MiB chunks, same thread count), ratio %.2f (%d rounds, %.1f MB)",
                writer,
                sealed,
                (1 - sealed / writer) * 100,
                zstd,
                writer / zstd,
                self.rounds,
                Double(stream.count) / 1e6
            )
        )
    }

    static func send(_ bytes: [UInt8], to path: String) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        guard UnixSocketAddress.with(path, { connect(fd, $0, $1) }) == 0 else { throw POSIXError(.ECONNREFUSED) }
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, min(1 << 20, bytes.count - offset)) }  // !-safe, non-empty
            guard n > 0 else { throw POSIXError(.EPIPE) }
            offset += n
        }
    }
}
