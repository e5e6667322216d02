import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import VNSnapCore
import VNSnapCrypto
import VNSnapImage

/// A `store` peer's part of the daemon (DESIGN §7): the replicas (`ReplicaStore`, RAM within the configured
/// `store_capacity_mib`, flushed under `data_dir/replicas`), the endpoint other peers reach them through, and
/// the background flush to disk.
public final class StoreService: Service, Sendable {
    /// How often sealed replicas are flushed.
    static let flushInterval = Duration.milliseconds(200)
    /// How often replicas of deleted or aborted snapshots are looked for.
    static let collectInterval = Duration.seconds(5)
    /// How long a snapshot stays aborted in the catalog before its replicas are dropped.
    static let abortGrace = Duration.seconds(60)
    /// When each held snapshot was first seen aborted.
    private let abortedSince = NIOLockedValueBox<[UInt64: ContinuousClock.Instant]>([:])

    /// The replicas.
    public let store: ReplicaStore
    private let server: StoreServer
    private let logger: Logger
    /// This peer's catalog, whose deletions and aborts (also those learned by catalog sync after being away)
    /// say which replicas are garbage.
    private let catalog: SnapshotCatalog?

    /// What `status` shows.
    public struct Status: Sendable, Codable, Hashable {
        /// Where other peers reach the store.
        public var address: String
        /// RAM, disk and replicas.
        public var usage: ReplicaStore.Usage
    }

    /// The port a peer's store listens on: two above its tunnel port (the membership port is usually one above).
    public static func port(tunnelPort: Int) -> Int { tunnelPort + 2 }

    /// Opens the store and binds its endpoint next to the tunnel (bound at `tunnelPort`); `keyring` is read on
    /// every connection, so a rotated key is used at once.
    public init(
        config: PeerConfig,
        tunnelPort: Int,
        keyring: NIOLockedValueBox<Keyring>,
        catalog: SnapshotCatalog? = nil,
        logger: Logger
    ) async throws {
        self.catalog = catalog
        self.store = ReplicaStore(
            directory: config.peer.dataDirectory + "/replicas",
            ramBudget: config.peer.storeCapacity
        )
        if !self.store.discardedAtStart.isEmpty {
            logger.notice(
                "Removed replicas left incomplete by an earlier run (no chunk list: cut short by a crash)",
                metadata: ["store.discarded": "\(self.store.discardedAtStart)"]
            )
        }
        self.server = try await StoreServer.bind(
            host: config.peer.bind.host,
            port: Self.port(tunnelPort: tunnelPort),
            store: self.store,
            keys: {
                keyring.withLockedValue { ring in
                    (ring.primary, Dictionary(ring.keys.map { ($0.keyID, $0) }, uniquingKeysWith: { a, _ in a }))
                }
            },
            logger: logger
        )
        self.logger = logger
    }

    /// Serves and flushes until graceful shutdown.
    public func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await self.server.run() }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: Self.flushInterval)
                    await self.flushOnce()
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: Self.collectInterval)
                    await self.collectGarbage()
                }
            }
            try? await gracefulShutdown()
            await self.flushOnce()
            group.cancelAll()
        }
    }

    /// A relay asked this store to dial it back (`SpliceRelay`): a peer outside this store's NAT waits there for
    /// it. Served like any connection, in the background.
    public func dialBack(relay: HostPort, token: [UInt8], me: PeerID, tickets: TunnelCrypto) {
        guard let address = try? SocketAddress.makeAddressResolvingHost(relay.host, port: relay.port) else {
            return self.logger.warning(
                "Store cannot dial back a relay it cannot resolve",
                metadata: ["store.relay": "\(relay)"]
            )
        }
        let ticket = SpliceTicket(role: .answer, from: me, to: PeerID(rawValue: 0), token: token)
        let server = self.server
        Task { await server.dialBack(relay: address, answer: ticket.encode(crypto: tickets)) }
    }

    private func flushOnce() async {
        let store = self.store
        do {
            _ = try await NIOThreadPool.singleton.runIfActive { try store.flush() }
        } catch {
            self.logger.error("Store flush failed", metadata: ["store.error": "\(error)"])
        }
    }

    /// Drops the replicas of snapshots this peer's catalog knows as deleted, or as aborted for `abortGrace`
    /// (a drop sent while this peer was down never arrived). The grace lets catalog sync correct an abort this
    /// peer heard from a superseded initiator whose successor committed.
    func collectGarbage() async {
        guard let catalog = self.catalog else { return }
        let store = self.store
        let held = Set(store.usage().replicas.map(\.key.snapshot))
        guard !held.isEmpty else { return }
        // The catalog reads on its own queue, off the cooperative pool.
        var states: [UInt64: String] = [:]
        for id in held { states[id] = (try? await catalog.entry(id))??.state ?? "" }
        let now = ContinuousClock.now
        let gone = self.abortedSince.withLockedValue { since in
            since = since.filter { states[$0.key] == "aborted" }
            for (id, state) in states where state == "aborted" && since[id] == nil { since[id] = now }
            return states.filter { id, state in
                state == "deleted" || (since[id].map { $0.duration(to: now) >= Self.abortGrace } ?? false)
            }.map(\.key)
        }
        for id in gone.sorted() {
            store.drop(snapshot: id)
            self.logger.notice(
                "Dropped the replicas of a deleted or aborted snapshot",
                metadata: ["snapshot.id": "\(id)"]
            )
        }
    }

    /// RAM, disk and replicas, for `status`.
    public func status() -> Status {
        Status(address: "\(self.server.address)", usage: self.store.usage())
    }
}
