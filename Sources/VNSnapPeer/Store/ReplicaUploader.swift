import Dispatch
import NIOCore
import Synchronization
import VNSnapCore
import VNSnapCrypto
import VNSnapImage

/// An image's chunks streamed to its store peers as the image writer makes them (DESIGN §7, VNsnap-memory):
/// one encrypted connection per replica, each chunk acknowledged once the store holds it. The writer's thread
/// blocks while `window` chunks are unacknowledged by some store, so memory stays bounded and a slow store
/// slows the stream instead of filling RAM. Durable when every replica is sealed; any replica failing fails
/// the image (a snapshot is committed only with all its replicas).
final class ReplicaUploader: ChunkSink {
    /// Chunks a store may lag behind before the writer waits.
    static let window = 8
    /// How long a store may go without acknowledging anything before its replica fails: the writer's thread
    /// must never wait forever, or QEMU's background snapshot (and the guest's protected memory) with it.
    static let silence: DispatchTimeInterval = .seconds(60)

    let label: String
    private let uploads: [Upload]
    private let tasks: [Task<Void, Never>]

    private final class Upload: Sendable {
        let store: String
        let continuation: AsyncStream<(SnapshotManifest.ChunkDescriptor, [UInt8])>.Continuation
        /// Free places in the window; the writer takes one per chunk, an acknowledgement gives it back.
        let room = ChunkWindow(size: ReplicaUploader.window)
        let done = DispatchSemaphore(value: 0)
        let failure = Mutex<String?>(nil)
        let accepted = Atomic<Bool>(false)
        let ended = Atomic<Bool>(false)

        init(store: String, continuation: AsyncStream<(SnapshotManifest.ChunkDescriptor, [UInt8])>.Continuation) {
            self.store = store
            self.continuation = continuation
        }
    }

    /// Starts one upload of `key` per store (`reserve` bytes at most each).
    init(
        _ key: ReplicaKey,
        reserve: UInt64,
        stores: [StoreTarget],
        secret: SecretKey,
        keys: @escaping @Sendable (UInt32) -> SecretKey?
    ) {
        self.label = "\(key)"
        var uploads: [Upload] = []
        var tasks: [Task<Void, Never>] = []
        for store in stores {
            let (stream, continuation) = AsyncStream<(SnapshotManifest.ChunkDescriptor, [UInt8])>.makeStream()
            let upload = Upload(store: store.name, continuation: continuation)
            uploads.append(upload)
            tasks.append(
                Task {
                    do {
                        try await StoreClient.put(
                            key,
                            reserve: reserve,
                            chunks: stream,
                            to: store.route,
                            key: secret,
                            keys: keys,
                            accepted: { upload.accepted.store(true, ordering: .releasing) },
                            acknowledged: { upload.room.give() }
                        )
                    } catch {
                        upload.failure.withLock { $0 = "store \(store.name): \(error)" }
                        // The writer must never wait on a failed store: open the window for good.
                        upload.room.open()
                    }
                    upload.ended.store(true, ordering: .releasing)
                    upload.done.signal()
                }
            )
        }
        self.uploads = uploads
        self.tasks = tasks
    }

    /// Waits until every store has admitted its replica (room reserved), so a store without room refuses the
    /// snapshot before any VM is cut; throws the first refusal, or a timeout.
    func opened(timeout: Duration = .seconds(10)) async throws(ImageError) {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let failure = self.uploads.compactMap({ $0.failure.withLock { $0 } }).first {
                throw ImageError(.noRoom, "\(self.label): \(failure)")
            }
            if self.uploads.allSatisfy({ $0.accepted.load(ordering: .acquiring) }) { return }
            try? await Task.sleep(for: .milliseconds(5))
        }
        throw ImageError(.io, "\(self.label): the stores did not admit the replicas within \(timeout)")
    }

    func write(_ chunk: SnapshotManifest.ChunkDescriptor, stored: [UInt8]) throws(ImageError) {
        for upload in self.uploads {
            if !upload.room.take(timeout: Self.silence) {
                throw ImageError(.io, "\(self.label): store \(upload.store) acknowledged nothing for \(Self.silence)")
            }
            if let failure = upload.failure.withLock({ $0 }) { throw ImageError(.io, "\(self.label): \(failure)") }
            upload.continuation.yield((chunk, stored))
        }
    }

    func finish(_ chunks: [SnapshotManifest.ChunkDescriptor]) throws(ImageError) {
        for upload in self.uploads { upload.continuation.finish() }
        for upload in self.uploads
        where upload.failure.withLock({ $0 }) == nil && upload.done.wait(timeout: .now() + Self.silence) == .timedOut {
            throw ImageError(
                .io,
                "\(self.label): store \(upload.store) did not seal its replica within \(Self.silence)"
            )
        }
        if let failure = self.uploads.compactMap({ $0.failure.withLock { $0 } }).first {
            throw ImageError(.io, "\(self.label): \(failure)")
        }
    }

    /// A store peer's image store.
    typealias StoreTarget = (name: String, route: StoreRoute)

    /// Opens an uploader of `key` to `placement.chosen`, each store admitting its replica before any VM is cut;
    /// a store that refuses (participants place without coordinating, so several may fill one) is replaced by
    /// the next of `placement.spares`. Returns the uploader and the stores that admitted it; throws every
    /// refusal when the spares run out.
    static func open(
        _ key: ReplicaKey,
        reserve: UInt64,
        placement: (chosen: [StoreTarget], spares: [StoreTarget]),
        secret: SecretKey,
        keys: @escaping @Sendable (UInt32) -> SecretKey?,
        onRefusal: @Sendable (ImageError) -> Void = { _ in }
    ) async throws(ImageError) -> (ReplicaUploader, [StoreTarget]) {
        var targets = placement.chosen
        var spares = placement.spares
        var refusals: [String] = []
        while true {
            let uploader = ReplicaUploader(key, reserve: reserve, stores: targets, secret: secret, keys: keys)
            do {
                try await uploader.opened()
                return (uploader, targets)
            } catch {
                // Before abandoning: the cancelled uploads must not count as refusals.
                let refused = uploader.refused
                uploader.abandon()
                refusals.append(error.message)
                guard !refused.isEmpty, spares.count >= refused.count else {
                    throw ImageError(error.code, refusals.joined(separator: "; "))
                }
                onRefusal(error)
                // The stores that admitted the abandoned upload let go of it once its connection is closed.
                await uploader.settled()
                targets = targets.map { refused.contains($0.name) ? spares.removeFirst() : $0 }
            }
        }
    }

    /// Waits (up to 5 s) until every upload's connection has ended.
    func settled() async {
        let deadline = ContinuousClock.now + .seconds(5)
        while self.uploads.contains(where: { !$0.ended.load(ordering: .acquiring) }), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        try? await Task.sleep(for: .milliseconds(50))
    }

    /// The stores that refused (or failed) their replica so far.
    var refused: [String] {
        self.uploads.filter { $0.failure.withLock { $0 } != nil }.map(\.store)
    }

    /// Fails the replica on `store` at once (membership declared it dead or gone): a store cut off by a partition
    /// never resets its TCP connection, and while the writer waits on it, QEMU keeps a `cow` snapshot's guest RAM
    /// write-protected (chaos seed 4, round 92). The image fails, so the snapshot aborts and the guest goes on.
    func storeDown(_ store: String) {
        for (upload, task) in zip(self.uploads, self.tasks)
        where upload.store == store && !upload.ended.load(ordering: .acquiring) {
            upload.failure.withLock { $0 = $0 ?? "store \(store) died or left while its replica was streamed" }
            upload.room.open()
            upload.continuation.finish()
            task.cancel()
        }
    }

    /// Stops every upload unsealed (a failed stream, an aborted snapshot): the stores abandon what they got.
    func abandon() {
        for task in self.tasks { task.cancel() }
        for upload in self.uploads { upload.continuation.finish() }
    }
}

/// The chunks a writer may send ahead of a store's acknowledgements: `take` blocks while `size` are unacknowledged,
/// `give` returns a place, and once `open` every `take` goes through (a failed store must never hold the writer).
final class ChunkWindow: Sendable {
    // Made at 0 and raised to `size`: libdispatch traps when a semaphore is freed below the value it was made with,
    // which a writer blocked at the moment the window opened left behind (it took one of the places `open` gave):
    // a peer crashed so under tools/chaos (seed 1, round 14, a store killed mid-stream).
    private let places = DispatchSemaphore(value: 0)
    private let isOpen = Atomic<Bool>(false)
    private let size: Int

    init(size: Int) {
        self.size = size
        for _ in 0..<size { self.places.signal() }
    }

    /// Takes a place, waiting up to `timeout`; `false` if none came.
    func take(timeout: DispatchTimeInterval) -> Bool {
        if self.isOpen.load(ordering: .acquiring) { return true }
        return self.places.wait(timeout: .now() + timeout) == .success
    }

    /// Returns a place (a chunk was acknowledged).
    func give() {
        self.places.signal()
    }

    /// Lets every `take` through from now on, waking one that waits.
    func open() {
        self.isOpen.store(true, ordering: .releasing)
        for _ in 0..<self.size { self.places.signal() }
    }
}
