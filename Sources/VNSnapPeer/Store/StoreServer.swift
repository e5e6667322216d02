import Logging
import NIOCore
import NIOExtras
import NIOPosix
import ServiceLifecycle
import VNSnapCore
import VNSnapCrypto
import VNSnapImage

/// A `store` peer's image-store endpoint (DESIGN §7): encrypted TCP connections from other peers putting
/// replicas into its `ReplicaStore`, fetching them for restores, and dropping them. Every chunk is checked on
/// receipt; the RAM budget refuses replicas that do not fit.
public final class StoreServer: Service, Sendable {
    typealias Connection = NIOAsyncChannel<ByteBuffer, ByteBuffer>

    /// The largest frame accepted: one chunk message and its sealing.
    static let maximumFrame = StoreCodec.maximumChunkBytes + 4096

    private let server: NIOAsyncChannel<Connection, Never>
    private let store: ReplicaStore
    private let keys: @Sendable () -> (primary: SecretKey, byID: [UInt32: SecretKey])
    private let logger: Logger

    /// Where it listens.
    public let address: SocketAddress

    private init(
        server: NIOAsyncChannel<Connection, Never>,
        store: ReplicaStore,
        keys: @escaping @Sendable () -> (primary: SecretKey, byID: [UInt32: SecretKey]),
        logger: Logger
    ) {
        self.server = server
        self.store = store
        self.keys = keys
        self.logger = logger
        // !-safe: a bound channel has a local address.
        self.address = server.channel.localAddress!
    }

    /// Listens at `host:port` (port 0: any free one) for `store`; `keys` gives the keyring as it is now.
    public static func bind(
        host: String,
        port: Int,
        store: ReplicaStore,
        keys: @escaping @Sendable () -> (primary: SecretKey, byID: [UInt32: SecretKey]),
        logger: Logger
    ) async throws -> StoreServer {
        StoreServer(server: try await Self.listen(host: host, port: port), store: store, keys: keys, logger: logger)
    }

    /// A listener whose connections carry length-prefixed frames (the store's, and a relay's splice endpoint).
    static func listen(host: String, port: Int) async throws -> NIOAsyncChannel<Connection, Never> {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try Self.frame(channel)
                    return try Connection(wrappingChannelSynchronously: channel)
                }
            }
    }

    /// A connection of length-prefixed frames to `address` (a store, or a relay's splice endpoint).
    static func connect(to address: SocketAddress) async throws -> Connection {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(StoreRoute.connectTimeout)
            .connect(to: address) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try Self.frame(channel)
                    return try Connection(wrappingChannelSynchronously: channel)
                }
            }
    }

    /// Length-prefixed frames, bounded so a bad length cannot make a peer buffer without limit.
    static func frame(_ channel: any Channel) throws {
        try channel.pipeline.syncOperations.addHandler(
            ByteToMessageHandler(
                LengthFieldBasedFrameDecoder(lengthFieldLength: .four),
                maximumBufferSize: Self.maximumFrame
            )
        )
        try channel.pipeline.syncOperations.addHandler(LengthFieldPrepender(lengthFieldLength: .four))
    }

    /// Serves connections until graceful shutdown.
    public func run() async throws {
        try await self.server.serveConnections { await self.serve($0) }
    }

    /// Serves one connection the store dialed itself, to a relay that asked (a peer outside this store's NAT is
    /// joined to it there): the splice ticket `answer` first, then the store's side of the protocol.
    public func dialBack(relay: SocketAddress, answer: [UInt8]) async {
        do {
            await self.serve(try await Self.connect(to: relay), preamble: answer)
        } catch {
            self.logger.warning(
                "Store could not dial back the relay that asked",
                metadata: ["store.relay": "\(relay)", "store.error": "\(error)"]
            )
        }
    }

    private func serve(_ connection: Connection, preamble: [UInt8]? = nil) async {
        let remote = connection.channel.remoteAddress.map { "\($0)" } ?? "unknown"
        var open: ReplicaKey?
        do {
            try await connection.executeThenClose { inbound, outbound in
                if let preamble { try await outbound.write(ByteBuffer(bytes: preamble)) }
                let keys = self.keys()
                var link = try await StoreConnection.handshake(
                    .store,
                    inbound: inbound.makeAsyncIterator(),
                    outbound: outbound,
                    key: keys.primary,
                    keys: { keys.byID[$0] }
                )
                while let request = try await link.receive() {
                    try await self.answer(request, open: &open, link: &link)
                }
            }
        } catch {
            self.logger.warning(
                "Store connection failed",
                metadata: ["store.remote": "\(remote)", "store.error": "\(error)"]
            )
        }
        // A replica left open by a broken stream will never complete.
        if let open { self.store.abandon(open) }
    }

    private func answer(_ request: StoreMessage, open: inout ReplicaKey?, link: inout StoreConnection) async throws {
        let store = self.store
        switch request {
        case .put(let key, let bytes):
            // One replica per connection at a time: a new put gives up the one left open.
            if let previous = open {
                store.abandon(previous)
                open = nil
            }
            guard VMDefinition.isValidName(key.vm) else {
                return try await link.send(.refused("\"\(key.vm)\" is not a VM name"))
            }
            do {
                try store.open(key, bytes: bytes)
                open = key
                try await link.send(.accepted)
            } catch {
                PeerMetrics.storeRefused()
                try await link.send(.refused("\(error)"))
            }
        case .chunk(let chunk, let data):
            guard let key = open else { return try await link.send(.failed("no replica is open")) }
            do {
                // Hashing 4 MiB is blocking work: off the cooperative pool.
                try await NIOThreadPool.singleton.runIfActive { try store.put(key, chunk: chunk, data: data) }
                try await link.send(.stored(index: UInt32(chunk.index)))
            } catch {
                store.abandon(key)
                open = nil
                try await link.send(.failed("\(error)"))
            }
        case .seal(let count, let digest):
            guard let key = open else { return try await link.send(.failed("no replica is open")) }
            open = nil
            do {
                try store.seal(key, chunkCount: Int(count), digest: digest)
                try await link.send(.sealed)
            } catch {
                store.abandon(key)
                try await link.send(.failed("\(error)"))
            }
        case .get(let key):
            guard VMDefinition.isValidName(key.vm) else {
                return try await link.send(.failed("\"\(key.vm)\" is not a VM name"))
            }
            // One chunk in memory at a time, whatever the image's size.
            do {
                let chunks = try store.chunkList(key)
                for chunk in chunks {
                    let data = try await NIOThreadPool.singleton.runIfActive { try store.chunk(key, chunk) }
                    try await link.send(.data(chunk, data: data))
                }
                try await link.send(.end(chunkCount: UInt32(chunks.count)))
            } catch {
                try await link.send(.failed("\(error)"))
            }
        case .drop(let snapshot):
            store.drop(snapshot: snapshot)
            try await link.send(.accepted)
        case .stat(let snapshot):
            let held = store.usage().replicas.filter { $0.key.snapshot == snapshot }.map {
                HeldReplica(key: $0.key, sealed: $0.sealed, inRAM: $0.inRAM, onDisk: $0.onDisk)
            }
            try await link.send(.held(held.sorted { "\($0.key)" < "\($1.key)" }))
        case .accepted, .refused, .stored, .sealed, .data, .end, .failed, .held:
            try await link.send(.failed("not a request"))
        }
    }
}
