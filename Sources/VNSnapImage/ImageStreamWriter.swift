import CVNSnapSys
import Foundation
import Synchronization
import VNSnapCore

#if canImport(Glibc)
import Glibc
#endif

/// Receives one save stream (QEMU's migration stream) on a unix stream socket and writes it as verified chunks
/// (DESIGN §7): cut into chunks, compressed and hashed on its own thread, never on an event loop, and handed to
/// a `ChunkSink` (chunk files on the local disk, or replicas on store peers). Memory stays bounded (one chunk
/// plus one read buffer, plus what the sink holds) whatever the VM's size.
public final class ImageStreamWriter: Sendable {
    /// Bytes received and stored so far.
    public struct Progress: Sendable, Hashable {
        /// Raw bytes received.
        public var rawBytes: UInt64 = 0
        /// Bytes written after compression.
        public var storedBytes: UInt64 = 0
        /// Chunks written.
        public var chunks: Int = 0
    }

    /// The socket QEMU connects to.
    public let socketPath: String
    private let listener: Int32
    private final class Shared: Sendable {
        let state = Mutex<(progress: Progress, result: Result<[SnapshotManifest.ChunkDescriptor], ImageError>?)>(
            (Progress(), nil)
        )
        let cancelled = Atomic<Bool>(false)
    }
    private let shared = Shared()

    /// Listens at `socketPath` and writes what arrives into `store` in `chunkSize`-byte chunks; with `readAhead`
    /// bytes, a second thread drains the socket that far ahead of compression (`ReadAheadQueue`); with
    /// `yielding`, compression runs at nice 10, so it yields the CPU to the guests' vCPUs; with `readBatch` bytes,
    /// the reader lets that much gather in the socket (sleeping at most 2 ms) before it reads. Chunks are sealed
    /// with `cipher` before they reach `store` (a store peer only ever holds them sealed).
    public init(
        socketPath: String,
        store: some ChunkSink,
        cipher: ChunkCipher? = nil,
        chunkSize: Int = 4 << 20,
        readAhead: Int = 0,
        yielding: Bool = false,
        readBatch: Int = 0
    ) throws(ImageError) {
        self.socketPath = socketPath
        unlink(socketPath)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ImageError(.io, "\(store.label): socket: \(String(cString: strerror(errno)))") }
        let bound = UnixSocketAddress.with(socketPath) { bind(fd, $0, $1) }
        guard bound == 0, listen(fd, 1) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw ImageError(.io, "\(store.label): cannot listen at \(socketPath): \(reason)")
        }
        self.listener = fd
        let thread = Thread { [shared = self.shared] in
            if yielding { _ = vnsnap_set_thread_nice(10) }
            Self.receive(
                listener: fd,
                store: store,
                cipher: cipher,
                chunkSize: chunkSize,
                readAhead: readAhead,
                readBatch: readBatch,
                shared: shared
            )
        }
        thread.name = "vnsnap-image"
        thread.start()
    }

    /// Waits, up to 2 ms in 250 µs sleeps, until `bytes` wait in the socket (or it ends: then the read finds the
    /// end at once). A reader blocked in `read` is woken by every write QEMU makes and preempts its migration
    /// thread each time (BENCHMARKS: 22,749 preemptions in one 2-VM snapshot); sleeping on a timer does not.
    private static func awaitBatch(_ connection: Int32, bytes: Int) {
        for _ in 0..<8 {
            let waiting = vnsnap_bytes_readable(connection)
            guard waiting >= 0, Int(waiting) < bytes else { return }
            var pause = timespec(tv_sec: 0, tv_nsec: 250_000)
            nanosleep(&pause, nil)
        }
    }

    private static func receive(
        listener: Int32,
        store: some ChunkSink,
        cipher: ChunkCipher?,
        chunkSize: Int,
        readAhead: Int,
        readBatch: Int,
        shared: Shared
    ) {
        let connection = accept(listener, nil, nil)
        close(listener)
        guard connection >= 0 else {
            let reason = String(cString: strerror(errno))
            shared.state.withLock { $0.result = .failure(ImageError(.io, "\(store.label): accept: \(reason)")) }
            return
        }
        defer { close(connection) }
        var chunker = ImageChunker(chunkSize: chunkSize)
        var chunks: [SnapshotManifest.ChunkDescriptor] = []
        var buffer = [UInt8](repeating: 0, count: 256 << 10)
        // After a failure (a full disk) or a cancellation the rest of the stream is still read, and discarded:
        // QEMU's background snapshot must run to its end, or the guest's write-protected memory stays
        // protected and the guest hangs.
        var failure: ImageError?
        func save(_ chunk: (index: Int, bytes: [UInt8])) {
            guard failure == nil else { return }
            do {
                let (descriptor, stored) = LocalChunkStore.compress(
                    index: chunk.index,
                    raw: chunk.bytes,
                    cipher: cipher
                )
                try store.write(descriptor, stored: stored)
                chunks.append(descriptor)
                shared.state.withLock {
                    $0.progress.storedBytes += descriptor.storedBytes
                    $0.progress.chunks += 1
                }
            } catch {
                failure = error
            }
        }
        let queue = readAhead > 0 ? ReadAheadQueue(limit: readAhead) : nil
        if let queue { Self.startReader(connection: connection, queue: queue, shared: shared) }
        while true {
            var block: [UInt8]?
            let n: Int
            if let queue {
                let next = queue.pop()
                block = next.block
                n = next.block?.count ?? (next.errno == 0 ? 0 : -1)
                if n < 0 { errno = next.errno }
            } else {
                if readBatch > 0 { Self.awaitBatch(connection, bytes: readBatch) }
                n = buffer.withUnsafeMutableBytes { read(connection, $0.baseAddress, $0.count) }
                if n < 0, errno == EINTR { continue }
                if n > 0 { shared.state.withLock { $0.progress.rawBytes += UInt64(n) } }
            }
            if n < 0 {
                if failure == nil {
                    failure = ImageError(.io, "\(store.label): reading the stream: \(String(cString: strerror(errno)))")
                }
                break
            }
            if n == 0 { break }
            if failure == nil, shared.cancelled.load(ordering: .relaxed) {
                failure = ImageError(.io, "\(store.label): the stream was cancelled")
            }
            guard failure == nil else {
                if let block { queue?.recycle(block) }
                continue
            }
            if let block {
                for chunk in chunker.append(block[...]) { save(chunk) }
                queue?.recycle(block)
            } else {
                for chunk in chunker.append(buffer[0..<n]) { save(chunk) }
            }
        }
        if failure == nil, shared.cancelled.load(ordering: .relaxed) {
            failure = ImageError(.io, "\(store.label): the stream was cancelled")
        }
        if failure == nil, let last = chunker.finish() { save(last) }
        if failure == nil {
            do {
                try store.finish(chunks)
            } catch {
                failure = error
            }
        }
        if failure != nil { store.abandon() }
        shared.state.withLock { $0.result = failure.map { .failure($0) } ?? .success(chunks) }
    }

    /// Drains the socket into `queue` on a thread of its own until the stream ends.
    private static func startReader(connection: Int32, queue: ReadAheadQueue, shared: Shared) {
        let reader = Thread {
            while true {
                var filled = queue.buffer()
                let n = filled.withUnsafeMutableBytes { read(connection, $0.baseAddress, $0.count) }
                if n < 0, errno == EINTR { continue }
                guard n > 0 else { return queue.finish(errno: n < 0 ? errno : 0) }
                shared.state.withLock { $0.progress.rawBytes += UInt64(n) }
                queue.push(filled, count: n)
            }
        }
        reader.name = "vnsnap-image-read"
        reader.start()
    }

    /// What has arrived so far.
    public var progress: Progress { self.shared.state.withLock { $0.progress } }

    /// The chunk list once the stream ended, or why it failed; `nil` while it runs.
    public var result: Result<[SnapshotManifest.ChunkDescriptor], ImageError>? {
        self.shared.state.withLock { $0.result }
    }

    /// Waits (polling) until the stream ends; throws its failure, or a timeout.
    public func wait(timeout: Duration) async throws(ImageError) -> [SnapshotManifest.ChunkDescriptor] {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let result = self.result { return try result.get() }
            // A cancelled wait (the peer shutting down) ends now rather than spinning until its deadline.
            guard !Task.isCancelled else { throw ImageError(.io, "image stream at \(self.socketPath): cancelled") }
            try? await Task.sleep(for: .milliseconds(10))
        }
        throw ImageError(.io, "image stream at \(self.socketPath): not finished within \(timeout)")
    }

    /// Gives up: a writer still waiting for its connection is woken and ends with a failure; one that is
    /// receiving reads the rest of the stream and discards it (so QEMU's snapshot can end normally).
    public func cancel() {
        self.shared.cancelled.store(true, ordering: .relaxed)
        // Wake a thread blocked in accept by connecting once.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        if fd >= 0 {
            _ = UnixSocketAddress.with(self.socketPath) { connect(fd, $0, $1) }
            close(fd)
        }
    }

    deinit {
        unlink(self.socketPath)
    }
}

/// Builds `sockaddr_un` values for unix socket paths.
public enum UnixSocketAddress {
    /// Calls `body` with a `sockaddr` for `path` and its length (for bind and connect).
    public static func with<T>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in path.utf8.prefix(raw.count - 1).enumerated() { raw[i] = byte }
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }
}
