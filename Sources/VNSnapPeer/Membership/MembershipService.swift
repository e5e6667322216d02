import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import VNSnapCore
import VNSnapCrypto

/// Membership as a service: the sealed UDP membership socket on its own event loop, joining through the
/// seeds, reporting member and keyring changes, and leaving gracefully on shutdown.
public final class MembershipService: Service, Sendable {
    /// What the service starts with.
    public struct Configuration: Sendable {
        /// This peer as it announces itself (keyring fields are filled in from `keyring`).
        public var me: MemberState
        /// Protocol tuning.
        public var settings: SWIMSettings
        /// Address the socket binds to.
        public var bind: HostPort
        /// Membership addresses to join through.
        public var seeds: [String]
        /// The cluster name (bound into the keys).
        public var clusterName: String
        /// This run's session.
        public var session: UInt64
        /// The keyring at start.
        public var keyring: Keyring
        /// Where the keyring is stored when it changes.
        public var keyringPath: String
        /// The durable term.
        public var termStore: TermStore
        /// How long a leaving peer keeps answering so the news spreads.
        public var leaveLinger: Duration = .seconds(1)

        /// Creates a configuration.
        public init(
            me: MemberState,
            settings: SWIMSettings,
            bind: HostPort,
            seeds: [String],
            clusterName: String,
            session: UInt64,
            keyring: Keyring,
            keyringPath: String,
            termStore: TermStore
        ) {
            self.me = me
            self.settings = settings
            self.bind = bind
            self.seeds = seeds
            self.clusterName = clusterName
            self.session = session
            self.keyring = keyring
            self.keyringPath = keyringPath
            self.termStore = termStore
        }
    }

    private let group: MultiThreadedEventLoopGroup
    private let engine: NIOLoopBound<MembershipEngine>
    private let sockets: [RebindingDatagramSocket]
    private let configuration: Configuration
    private let events: AsyncStream<MembershipEvent>
    private let eventSink: AsyncStream<MembershipEvent>.Continuation
    private let onEvent: @Sendable (MembershipEvent) async -> Void
    private let logger: Logger

    /// The address the membership socket is bound to.
    public let address: SocketAddress

    private init(
        group: MultiThreadedEventLoopGroup,
        engine: NIOLoopBound<MembershipEngine>,
        sockets: [RebindingDatagramSocket],
        configuration: Configuration,
        events: (AsyncStream<MembershipEvent>, AsyncStream<MembershipEvent>.Continuation),
        onEvent: @escaping @Sendable (MembershipEvent) async -> Void,
        logger: Logger
    ) {
        self.group = group
        self.engine = engine
        self.sockets = sockets
        self.configuration = configuration
        (self.events, self.eventSink) = events
        self.onEvent = onEvent
        self.address = sockets[0].localAddress
        self.logger = logger
    }

    /// Reads the durable term and binds the socket; throws (releasing what it took) if either fails.
    ///
    /// `onEvent` is called in order, one event at a time, while the service runs.
    public static func start(
        _ configuration: Configuration,
        logger: Logger,
        onEvent: @escaping @Sendable (MembershipEvent) async -> Void
    ) async throws -> MembershipService {
        let storedTerm = try configuration.termStore.load()
        let events = AsyncStream.makeStream(of: MembershipEvent.self)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        do {
            let engine = try await loop.submit {
                NIOLoopBound(
                    MembershipEngine(
                        eventLoop: loop,
                        me: configuration.me,
                        settings: configuration.settings,
                        clusterName: configuration.clusterName,
                        session: configuration.session,
                        keyring: configuration.keyring,
                        keyringPath: configuration.keyringPath,
                        termStore: configuration.termStore,
                        storedTerm: storedTerm,
                        emit: { events.continuation.yield($0) },
                        logger: logger
                    ),
                    eventLoop: loop
                )
            }.get()
            let socket = try await RebindingDatagramSocket.bind(
                "membership",
                at: configuration.bind,
                receiveCapacity: MembershipEngine.maximumDatagram + MembershipEngine.envelopeOverhead + 1,
                loop: loop,
                logger: logger,
                bootstrap: DatagramBootstrap(group: loop)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(MembershipHandler(engine: engine.value))
                        }
                    },
                attach: { engine.value.channel = $0 }
            )
            // The dial-back socket: same host, any port, nothing read from it.
            let dial: RebindingDatagramSocket
            do {
                dial = try await RebindingDatagramSocket.bind(
                    "membership dial-back",
                    at: HostPort(host: configuration.bind.host, port: 0),
                    samePort: false,
                    loop: loop,
                    logger: logger,
                    bootstrap: DatagramBootstrap(group: loop),
                    attach: { engine.value.dialChannel = $0 }
                )
            } catch {
                await socket.close()
                throw error
            }
            logger.info(
                "Membership ready",
                metadata: [
                    "membership.bind": "\(socket.localAddress.displayString)",
                    "membership.advertise": "\(configuration.me.address)", "election.storedTerm": "\(storedTerm)",
                ]
            )
            return MembershipService(
                group: group,
                engine: engine,
                sockets: [socket, dial],
                configuration: configuration,
                events: events,
                onEvent: onEvent,
                logger: logger
            )
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// Joins, reports events until graceful shutdown, then leaves, lingers so the news spreads, and closes.
    public func run() async throws {
        try await self.submit { $0.join(seeds: self.configuration.seeds) }
        await withTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                for await event in self.events { await self.onEvent(event) }
            }
            try? await gracefulShutdown()
            await self.leave()
            try? await Task.sleep(for: self.configuration.leaveLinger)
            self.eventSink.finish()
            await tasks.waitForAll()
        }
        for socket in self.sockets { await socket.close() }
        try? await self.group.shutdownGracefully()
        self.logger.info("Membership stopped")
    }

    /// Announces `left` (the daemon then shuts down).
    public func leave() async {
        try? await self.submit { $0.leave() }
    }

    /// Membership, election and keyring as `status` shows them.
    public func status() async throws -> MembershipStatus {
        try await self.submit { $0.status() }
    }

    /// Makes a cluster-wide keyring change here and starts spreading it.
    public func change(_ change: KeyringChange) async throws -> Keyring {
        try await self.submit { engine throws in try engine.change(change) }
    }

    /// Sends a snapshot protocol message to a member, sealed, over the membership socket.
    public func send(snapshot message: SnapshotMessage, to peer: PeerID) async {
        await self.send(snapshots: [(message, peer)])
    }

    /// Sends several snapshot messages in one turn of the event loop, those to other members before those to this
    /// peer: a cut asked of every participant reaches the others before this peer's own cuts load its CPU (with
    /// the local cut first, the others' marker waited behind it and their cuts came hundreds of ms later).
    public func send(snapshots messages: [(SnapshotMessage, PeerID)]) async {
        _ = try? await self.submit { engine in
            let me = engine.swim.me.id
            for (message, peer) in messages where peer != me { engine.sendSnapshot(message, to: peer) }
            for (message, peer) in messages where peer == me { engine.sendSnapshot(message, to: peer) }
        }
    }

    /// Asks store `store` to dial this relay's splice port back for `token`; returns why not, or `nil` once asked.
    public func askToDial(store: PeerID, token: [UInt8], port: Int) async -> String? {
        do {
            return try await self.submit { $0.askToDial(store: store, token: token, port: port) }
        } catch {
            return "membership has stopped"
        }
    }

    /// The alive members (this peer included) by id and name, the current initiator and the term.
    public func view() async throws -> MembershipView {
        try await self.submit { engine in
            var alive = [engine.swim.me.id: engine.swim.me.name]
            for member in engine.swim.otherMembers where member.state.status == .alive {
                alive[member.state.id] = member.state.name
            }
            var names = alive
            for member in engine.swim.otherMembers { names[member.state.id] = member.state.name }
            var stores: [PeerID: MembershipView.Store] = [:]
            let states = [engine.swim.me] + engine.swim.otherMembers.map(\.state)
            for state in states where alive[state.id] != nil && state.metadata.roles.contains(.store) {
                let nat = state.id == engine.swim.me.id ? NATType.public : state.metadata.nat
                // Its relays' splice endpoints: peers outside its NAT reach its store through them.
                let relays = state.metadata.relays.compactMap { relay -> String? in
                    guard alive[relay] != nil, let member = engine.swim.state(of: relay),
                        let host = HostPort(member.address)?.host,
                        let tunnel = HostPort(member.metadata.tunnelAddress)
                    else { return nil }
                    return HostPort(host: host, port: SpliceRelay.port(tunnelPort: tunnel.port)).description
                }
                // A store seen translated by a NAT, with no relay, cannot take the TCP stream of a peer outside it.
                // (Not `inbound blocked` alone: a peer on a LAN is classified so until its first dial-back.)
                guard relays.isEmpty ? nat != .symmetric && nat != .endpointIndependent : true else { continue }
                stores[state.id] = MembershipView.Store(
                    name: state.name,
                    tunnelAddress: state.metadata.tunnelAddress,
                    capacity: state.metadata.storeCapacity,
                    relays: relays,
                    behindNAT: nat != .public && nat != .unknown && !relays.isEmpty
                )
            }
            let vmHosts = Set(
                ([engine.swim.me] + engine.swim.otherMembers.map(\.state)).filter {
                    alive[$0.id] != nil && $0.metadata.roles.contains(.vm)
                }.map(\.id)
            )
            return MembershipView(
                me: engine.swim.me.id,
                alive: alive,
                names: names,
                initiator: engine.initiator,
                term: engine.election.term,
                stores: stores,
                vmHosts: vmHosts
            )
        }
    }

    private func submit<T: Sendable>(_ body: @escaping @Sendable (MembershipEngine) throws -> T) async throws -> T {
        let engine = self.engine
        return try await self.group.next().submit { try body(engine.value) }.get()
    }
}

/// Hands every datagram of the membership socket to the engine.
final class MembershipHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>

    private let engine: MembershipEngine

    init(engine: MembershipEngine) {
        self.engine = engine
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = Self.unwrapInboundIn(data)
        self.engine.receive(envelope.data, from: envelope.remoteAddress)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A UDP socket reports ICMP errors (port unreachable) of earlier sends; the socket stays usable.
        self.engine.sendFailed()
    }
}

/// What the snapshot service needs of membership at one moment.
public struct MembershipView: Sendable, Hashable {
    /// This peer.
    public var me: PeerID
    /// Alive members (this peer included), by id, with their names.
    public var alive: [PeerID: String]
    /// Every known member's name (dead and left too).
    public var names: [PeerID: String]
    /// The initiator, if this peer sees a majority.
    public var initiator: PeerID?
    /// The current election term.
    public var term: UInt64
    /// Alive members with the `store` role.
    public var stores: [PeerID: Store]
    /// Alive members with the `vm` role (where a restore may place a lost host's VMs).
    public var vmHosts: Set<PeerID>

    /// A store peer as membership knows it.
    public struct Store: Sendable, Hashable {
        /// Its name.
        public var name: String
        /// Its tunnel address (`host:port`); its image store listens two ports above.
        public var tunnelAddress: String
        /// RAM it offers to replicas, bytes.
        public var capacity: UInt64
        /// Its relays' splice endpoints (`host:port`), when it keeps relays (issue 15).
        public var relays: [String] = []
        /// Whether it measured itself behind a NAT or firewall and keeps relays: try them before its address.
        public var behindNAT = false
    }

    /// Creates a view.
    public init(
        me: PeerID,
        alive: [PeerID: String],
        names: [PeerID: String],
        initiator: PeerID?,
        term: UInt64,
        stores: [PeerID: Store] = [:],
        vmHosts: Set<PeerID> = []
    ) {
        self.me = me
        self.alive = alive
        self.names = names
        self.initiator = initiator
        self.term = term
        self.stores = stores
        self.vmHosts = vmHosts
    }
}
