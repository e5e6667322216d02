import Foundation
import NIOCore
import NIOPosix
import Testing
import VNSnapCore
import VNSnapCrypto
import VNSnapImage

@testable import VNSnapPeer

/// The image-store protocol between two real endpoints over loopback TCP: a replica put chunk by chunk comes
/// back byte for byte; a wrong key, a full budget, a damaged chunk or garbage on the wire is refused, and the
/// store serves on.
@Suite(.serialized) struct StoreServerTests {
    static let replica = ReplicaKey(snapshot: 11, vm: "sink", kind: .memory)

    /// `count` stored chunks of 64 kB of a counter pattern each.
    static func chunks(_ count: Int) -> [(SnapshotManifest.ChunkDescriptor, [UInt8])] {
        (0..<count).map { index in
            LocalChunkStore.compress(
                index: index,
                raw: (0..<65_536).map { UInt8(truncatingIfNeeded: $0 &* (index + 3) >> 5) }
            )
        }
    }

    /// Puts `chunks` as the test replica into the fixture's first store.
    func put(_ fixture: StoreFixture, _ chunks: [(SnapshotManifest.ChunkDescriptor, [UInt8])], reserve: UInt64)
        async throws
    {
        try await StoreClient.put(
            Self.replica,
            reserve: reserve,
            chunks: chunks,
            to: .direct(fixture.stores[0].server.address),
            key: fixture.key,
            keys: StoreFixture.keys(fixture.key)
        )
    }

    @Test func test_putThenGet_returnsEveryChunk_andTheStoreListsTheSealedReplicaInRAM() async throws {
        let fixture = try await StoreFixture.start(budgets: [64 << 20])
        defer { fixture.stop() }
        let (store, server) = (fixture.stores[0].store, fixture.stores[0].server)
        let chunks = Self.chunks(10)
        try await self.put(fixture, chunks, reserve: 8 << 20)
        #expect(store.usage().replicas.map { [$0.sealed, $0.inRAM] } == [[true, true]])
        let keys = StoreFixture.keys(fixture.key)
        let back = try await StoreClient.get(Self.replica, from: .direct(server.address), key: fixture.key, keys: keys)
        #expect(back.map(\.0) == chunks.map(\.0) && back.map(\.1) == chunks.map(\.1))
        try await StoreClient.drop(snapshot: 11, at: .direct(server.address), key: fixture.key, keys: keys)
        #expect(store.usage().replicas.isEmpty)
    }

    @Test func test_noRoomOrADamagedChunk_isRefusedWithTheReason_andNothingIsKept() async throws {
        let fixture = try await StoreFixture.start(budgets: [1 << 20])
        defer { fixture.stop() }
        let chunks = Self.chunks(2)
        do {
            try await self.put(fixture, chunks, reserve: 8 << 20)
            Issue.record("a replica beyond the budget was accepted")
        } catch {
            #expect("\(error)".contains("refused") && "\(error)".contains("MiB of RAM free"), "\(error)")
        }
        var damaged = chunks
        damaged[1].1[0] ^= 1
        do {
            try await self.put(fixture, damaged, reserve: 1 << 20)
            Issue.record("a damaged chunk was accepted")
        } catch {
            #expect("\(error)".contains("chunk 1: does not match its hash"), "\(error)")
        }
        let usage = fixture.stores[0].store.usage()
        #expect(usage.replicas.isEmpty && usage.ramUsed == 0)
    }

    @Test func test_wrongKeyOrGarbage_isRefused_andTheStoreServesTheNextPeer() async throws {
        let fixture = try await StoreFixture.start(budgets: [64 << 20])
        defer { fixture.stop() }
        let address = fixture.stores[0].server.address
        let stranger = SecretKey.generate()
        await #expect(throws: (any Error).self) {
            try await StoreClient.get(
                Self.replica,
                from: .direct(address),
                key: stranger,
                keys: StoreFixture.keys(stranger)
            )
        }
        // Raw garbage, with a length field far beyond any frame.
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(to: address).get()
        try await channel.writeAndFlush(ByteBuffer(bytes: [0xff, 0xff, 0xff, 0xff] + Array(repeating: 7, count: 64)))
            .get()
        try? await channel.close().get()
        try await self.put(fixture, Self.chunks(1), reserve: 1 << 20)
        #expect(fixture.stores[0].store.usage().replicas.count == 1)
    }

    @Test func test_aRecordedPeerSession_replayedOnANewConnection_isNotOpened() async throws {
        let fixture = try await StoreFixture.start(budgets: [64 << 20])
        defer { fixture.stop() }
        let address = fixture.stores[0].server.address
        func connect() async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
            try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(to: address) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try StoreServer.frame(channel)
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        }
        // A genuine peer's session, done by hand and recorded.
        var recorded: [[UInt8]] = []
        try await connect().executeThenClose { inbound, outbound in
            var frames = inbound.makeAsyncIterator()
            let storeKey = Array(try #require(try await frames.next()).readableBytesView)
            let mine = ExchangeKeyPair.generate()
            var sealer = StreamSealer(
                key: fixture.key,
                context: StoreConnection.context + "/" + storeKey.hexString,
                shared: try #require(mine.sharedSecret(with: storeKey))
            )
            recorded = [mine.publicKey + sealer.header, sealer.seal(try StoreCodec.encode(.drop(snapshot: 5)))]
            for frame in recorded { try await outbound.write(ByteBuffer(bytes: frame)) }
            #expect(try await frames.next() != nil, "the store's header")
            #expect(try await frames.next() != nil, "the genuine session is answered")
        }
        // Replayed on a new connection: the store's exchange key is new, so the recorded stream does not open.
        try await connect().executeThenClose { inbound, outbound in
            var frames = inbound.makeAsyncIterator()
            _ = try await frames.next()
            for frame in recorded { try await outbound.write(ByteBuffer(bytes: frame)) }
            _ = try? await frames.next()  // the store's header: it cannot know yet
            let answer: ByteBuffer?
            do { answer = try await frames.next() } catch { answer = nil }
            #expect(answer == nil, "a replayed session must not be answered")
        }
    }
}
