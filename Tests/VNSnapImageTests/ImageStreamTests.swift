import Foundation
import Testing
import VNSnapCore
import VNSnapImage

#if canImport(Glibc)
import Glibc
#endif

/// A save stream through a real unix socket into verified chunk files and back out, and the checks that
/// stop a restore before anything is used.
@Suite struct ImageStreamTests {
    func scratch() throws -> String {
        let directory = NSTemporaryDirectory() + "vnsnap-image-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory + "/chunks", withIntermediateDirectories: true)
        return directory
    }

    /// Writes `bytes` into a unix stream socket, as QEMU's migration does.
    func send(_ bytes: [UInt8], to path: String) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        guard UnixSocketAddress.with(path, { connect(fd, $0, $1) }) == 0 else { throw POSIXError(.ECONNREFUSED) }
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, bytes.count - offset) }
            guard n > 0 else { throw POSIXError(.EPIPE) }
            offset += n
        }
    }

    /// Reads everything one connection writes to a listening unix socket.
    func receiveAll(at path: String, while body: () throws -> Void) throws -> [UInt8] {
        unlink(path)
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        guard UnixSocketAddress.with(path, { bind(listener, $0, $1) }) == 0, listen(listener, 1) == 0 else {
            throw POSIXError(.EADDRINUSE)
        }
        let received = ReceivedBytes()
        let thread = Thread {
            let connection = accept(listener, nil, nil)
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(connection, $0.baseAddress, $0.count) }
                guard n > 0 else { break }
                received.append(buffer[0..<n])
            }
            close(connection)
            received.finish()
        }
        thread.start()
        try body()
        while !received.done { usleep(1000) }
        return received.bytes
    }

    /// Read as compressed, read ahead by a queue smaller than the stream (so the reader waits for room), and read
    /// in batches (the reader lets 128 KiB gather before each read, and finds the stream's end all the same).
    @Test(arguments: [(0, 0), (32 << 10, 0), (0, 128 << 10)])
    func test_streamThroughASocket_becomesVerifiedChunks_andFeedsBackIdentical(readAhead: Int, readBatch: Int)
        async throws
    {
        let directory = try self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = LocalChunkStore(directory: directory + "/chunks", label: "snapshot 1, VM test")
        let writer = try ImageStreamWriter(
            socketPath: directory + "/in.sock",
            store: store,
            chunkSize: 64 << 10,
            readAhead: readAhead,
            readBatch: readBatch
        )
        // Compressible and incompressible parts, not a multiple of the chunk size.
        var stream = [UInt8](repeating: 0, count: 3_000_000)
        for i in stride(from: 0, to: stream.count, by: 7) {
            stream[i] = UInt8(truncatingIfNeeded: i &* 2_654_435_761 >> 13)
        }
        try self.send(stream, to: writer.socketPath)
        let chunks = try await writer.wait(timeout: .seconds(30))
        #expect(chunks.map(\.index) == Array(0..<((stream.count + (64 << 10) - 1) / (64 << 10))))
        #expect(writer.progress.rawBytes == UInt64(stream.count))
        let descriptor = ImageStreamFeeder.descriptor(of: chunks)
        try ImageStreamFeeder.verify(chunks, against: descriptor, in: store)
        let fed = try self.receiveAll(at: directory + "/out.sock") {
            try ImageStreamFeeder.feed(chunks, from: store, to: directory + "/out.sock")
        }
        #expect(fed == stream)
    }

    @Test func test_aFlippedByte_orAChunkListThatIsNotTheCommittedOne_isRefusedNamingWhatIsWrong() async throws {
        let directory = try self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = LocalChunkStore(directory: directory + "/chunks", label: "snapshot 9, VM sink")
        let writer = try ImageStreamWriter(socketPath: directory + "/in.sock", store: store, chunkSize: 1 << 10)
        try self.send(Array(repeating: 42, count: 5_000), to: writer.socketPath)
        let chunks = try await writer.wait(timeout: .seconds(30))
        let descriptor = ImageStreamFeeder.descriptor(of: chunks)
        // A list missing its last chunk does not match the committed digest.
        #expect(throws: ImageError.self) {
            try ImageStreamFeeder.verify(Array(chunks.dropLast()), against: descriptor, in: store)
        }
        // One flipped byte in chunk 2's file.
        let path = store.path(of: 2)
        var bytes = [UInt8](FileManager.default.contents(atPath: path)!)
        bytes[bytes.count / 2] ^= 0x01
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        do {
            try ImageStreamFeeder.verify(chunks, against: descriptor, in: store)
            Issue.record("a corrupted chunk verified")
        } catch {
            #expect(error.code == .corrupt)
            #expect(error.message.contains("snapshot 9, VM sink, chunk 2"), "\(error.message)")
        }
    }

    @Test func test_writerCancelledBeforeQEMUConnects_endsWithAFailure_andRemovesItsSocket() async throws {
        let directory = try self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = LocalChunkStore(directory: directory + "/chunks", label: "snapshot 3, VM relay")
        let path = directory + "/in.sock"
        do {
            let writer = try ImageStreamWriter(socketPath: path, store: store)
            writer.cancel()
            await #expect(throws: ImageError.self) { _ = try await writer.wait(timeout: .seconds(10)) }
        }
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func test_channelLogRecords_roundTrip_andATruncatedRecordIsRefused() throws {
        let frames: [[UInt8]] = [[1, 2, 3], [], Array(repeating: 9, count: 1514)]
        let encoded = ChannelLogFormat.encode(frames)
        #expect(try ChannelLogFormat.decode(encoded, label: "log") == frames)
        #expect(throws: ImageError.self) { try ChannelLogFormat.decode(Array(encoded.dropLast()), label: "log") }
        #expect(throws: ImageError.self) { try ChannelLogFormat.decode([0, 0], label: "log") }
    }
}

/// Bytes a reader thread collects.
final class ReceivedBytes: @unchecked Sendable {
    private let lock = NSLock()
    private var storage: [UInt8] = []
    private var finished = false

    func append(_ bytes: ArraySlice<UInt8>) { self.lock.withLock { self.storage += bytes } }
    func finish() { self.lock.withLock { self.finished = true } }
    var done: Bool { self.lock.withLock { self.finished } }
    var bytes: [UInt8] { self.lock.withLock { self.storage } }
}
