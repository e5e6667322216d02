import Foundation
import NIOCore
import Synchronization
import Testing
import VNSnapCore
import VNSnapCrypto
import VNSnapImage

@testable import VNSnapPeer

/// An image stream written straight into the RAM of two real stores over loopback TCP, as a snapshot to
/// memory targets does: both replicas sealed with the image's chunk list, or the image fails naming the store.
@Suite(.serialized) struct ReplicaUploaderTests {
    static let replica = ReplicaKey(snapshot: 21, vm: "source", kind: .memory)

    /// A writer streaming into every store of `fixture`, fed a 40-chunk image as QEMU would; returns the writer
    /// and the raw stream.
    func stream(into fixture: StoreFixture) throws -> (ImageStreamWriter, [UInt8]) {
        let uploader = ReplicaUploader(
            Self.replica,
            reserve: 8 << 20,
            stores: fixture.stores.enumerated().map { ("s\($0.offset)", StoreRoute.direct($0.element.server.address)) },
            secret: fixture.key,
            keys: StoreFixture.keys(fixture.key)
        )
        let source = LocalChunkStore(directory: fixture.directory + "/source", label: "source")
        try FileManager.default.createDirectory(atPath: source.directory, withIntermediateDirectories: true)
        let writer = try ImageStreamWriter(
            socketPath: fixture.directory + "/in.sock",
            store: uploader,
            chunkSize: 64 << 10
        )
        var stream: [UInt8] = []
        var chunks: [SnapshotManifest.ChunkDescriptor] = []
        for index in 0..<40 {
            let raw = (0..<65_536).map { UInt8(truncatingIfNeeded: ($0 >> (index % 7)) &* (index + 1)) }
            stream += raw
            chunks.append(try source.write(index: index, raw: raw))
        }
        try ImageStreamFeeder.feed(chunks, from: source, to: writer.socketPath)
        return (writer, stream)
    }

    @Test func test_imageStreamToTwoStores_bothHoldTheSameSealedReplica_andItReadsBackAsTheStream() async throws {
        let fixture = try await StoreFixture.start(budgets: [64 << 20, 64 << 20])
        defer { fixture.stop() }
        let (writer, stream) = try self.stream(into: fixture)
        let chunks = try await writer.wait(timeout: .seconds(60))
        #expect(chunks.count == 40)
        for (store, _, _) in fixture.stores {
            #expect(store.usage().replicas.map(\.sealed) == [true])
            let held = try store.chunks(Self.replica)
            #expect(held.map(\.0) == chunks)
            #expect(try held.flatMap { try Zstd.decompress($0.1, rawSize: Int($0.0.rawBytes)) } == stream)
        }
    }

    @Test func test_opened_waitsForEveryStoresAdmission_andARefusalNamesTheStore() async throws {
        let fixture = try await StoreFixture.start(budgets: [64 << 20, 1 << 20])
        defer { fixture.stop() }
        let admitted = ReplicaUploader(
            Self.replica,
            reserve: 8 << 20,
            stores: [("s0", StoreRoute.direct(fixture.stores[0].server.address))],
            secret: fixture.key,
            keys: StoreFixture.keys(fixture.key)
        )
        try await admitted.opened()
        admitted.abandon()
        let refused = ReplicaUploader(
            ReplicaKey(snapshot: 22, vm: "sink", kind: .memory),
            reserve: 8 << 20,
            stores: fixture.stores.enumerated().map { ("s\($0.offset)", StoreRoute.direct($0.element.server.address)) },
            secret: fixture.key,
            keys: StoreFixture.keys(fixture.key)
        )
        do {
            try await refused.opened()
            Issue.record("a store without room admitted a replica")
        } catch {
            #expect(error.code == .noRoom && error.message.contains("store s1"), "\(error)")
        }
        refused.abandon()
    }

    @Test func test_open_aStoreRefusesAtItsBudget_theNextSpareTakesTheReplica() async throws {
        // s1 is full for this replica; s2 has room: the replica goes to s0 and s2.
        let fixture = try await StoreFixture.start(budgets: [64 << 20, 1 << 20, 64 << 20])
        defer { fixture.stop() }
        let targets = fixture.stores.enumerated().map {
            (name: "s\($0.offset)", route: StoreRoute.direct($0.element.server.address))
        }
        let refusals = Mutex<[String]>([])
        let (uploader, stores) = try await ReplicaUploader.open(
            Self.replica,
            reserve: 8 << 20,
            placement: (chosen: [targets[0], targets[1]], spares: [targets[2]]),
            secret: fixture.key,
            keys: StoreFixture.keys(fixture.key)
        ) { refusal in refusals.withLock { $0.append(refusal.message) } }
        #expect(stores.map(\.name) == ["s0", "s2"])
        #expect(refusals.withLock { $0.count == 1 && $0[0].contains("store s1") }, "\(refusals.withLock { $0 })")
        uploader.abandon()
        // No spare left: refused, naming every store that said no.
        do {
            _ = try await ReplicaUploader.open(
                ReplicaKey(snapshot: 23, vm: "sink", kind: .memory),
                reserve: 8 << 20,
                placement: (chosen: [targets[1]], spares: []),
                secret: fixture.key,
                keys: StoreFixture.keys(fixture.key)
            )
            Issue.record("a replica without a store with room was opened")
        } catch {
            #expect(error.code == .noRoom && error.message.contains("store s1"), "\(error)")
        }
    }

    @Test func test_aStoreWithoutRoom_failsTheImageNamingIt_andTheOtherKeepsNothing() async throws {
        let fixture = try await StoreFixture.start(budgets: [64 << 20, 1 << 20])
        defer { fixture.stop() }
        let (writer, _) = try self.stream(into: fixture)
        do {
            _ = try await writer.wait(timeout: .seconds(60))
            Issue.record("an image with a refused replica was reported durable")
        } catch {
            #expect(error.message.contains("store s1") && error.message.contains("MiB of RAM free"), "\(error)")
        }
        // The healthy store's upload was abandoned unsealed; it lets go of it once the connection closes.
        let healthy = fixture.stores[0].store
        let deadline = ContinuousClock.now + .seconds(10)
        while !healthy.usage().replicas.isEmpty, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(healthy.usage().replicas.isEmpty)
    }

    /// A store cut off by a partition: it took the connection and then says nothing, so the writer blocks on its
    /// window; membership declaring it dead fails the image at once, naming it, instead of after the store's
    /// 60 s of silence (chaos seed 4, round 92: the guest of a `cow` snapshot stalled meanwhile).
    @Test func test_storeDeclaredDeadWhileTheWriterWaits_failsTheImageAtOnce_namingIt() async throws {
        // A listener that never accepts: the kernel completes the handshake, nothing ever answers.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 8) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        try #require(bound)
        let port = Int(UInt16(bigEndian: address.sin_port))
        let uploader = ReplicaUploader(
            Self.replica,
            reserve: 8 << 20,
            stores: [("s0", StoreRoute.direct(try SocketAddress(ipAddress: "127.0.0.1", port: port)))],
            secret: SecretKey.generate(),
            keys: { _ in nil }
        )
        let chunk = SnapshotManifest.ChunkDescriptor(index: 0, rawBytes: 4, storedBytes: 4, hash: "")
        let outcome = Outcome()
        // A thread of its own: the writer blocks as an image writer's thread does.
        let writer = Thread {
            do {
                for _ in 0..<(ReplicaUploader.window + 4) { try uploader.write(chunk, stored: [1, 2, 3, 4]) }
                outcome.set("every chunk went through")
            } catch {
                outcome.set("\(error)")
            }
        }
        writer.start()
        // The writer takes the window's places, then waits for an acknowledgement that never comes.
        try await Task.sleep(for: .milliseconds(500))
        #expect(outcome.get() == nil, "the writer should be waiting on the silent store")
        uploader.storeDown("s0")
        var result: String?
        for _ in 0..<200 where result == nil {
            try await Task.sleep(for: .milliseconds(50))
            result = outcome.get()
        }
        #expect(result?.contains("store s0 died or left") == true, "\(result ?? "still waiting")")
        uploader.abandon()
    }

    /// The writer blocked on a full window when its store failed: `open` lets it through, and the window is freed
    /// afterwards without libdispatch's "semaphore deallocated while in use" trap (chaos: a peer crashed so).
    @Test func test_windowOpenedWhileTheWriterWaits_letsItThrough_andIsFreedSafely() async throws {
        var window: ChunkWindow? = ChunkWindow(size: 2)
        #expect(window?.take(timeout: .seconds(1)) == true)
        #expect(window?.take(timeout: .seconds(1)) == true)
        #expect(window?.take(timeout: .milliseconds(50)) == false, "a full window let a third chunk through")
        let blocked = window!
        let waiter = Task.detached { blocked.take(timeout: .seconds(30)) }
        try await Task.sleep(for: .milliseconds(100))
        blocked.open()
        #expect(await waiter.value)
        #expect(blocked.take(timeout: .milliseconds(1)) && blocked.take(timeout: .milliseconds(1)))
        window?.give()
        // Freed as the test ends: with the places taken above, a semaphore made at `size` would trap there.
        window = nil
        #expect(window == nil)
    }
}

/// What a writer thread ended with.
private final class Outcome: @unchecked Sendable {
    private let lock = NSLock()
    private var value: String?

    func set(_ value: String) { self.lock.withLock { self.value = value } }
    func get() -> String? { self.lock.withLock { self.value } }
}
