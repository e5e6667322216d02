import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import VNSnapCore
import VNSnapCrypto

#if canImport(Glibc)
import Glibc
#endif

/// The VIOLIN switch as a service: binds the tunnel socket and one port socket per local VM on a
/// dedicated event loop, and runs until graceful shutdown.
public final class SwitchService: Service, Sendable {
    let group: MultiThreadedEventLoopGroup
    let engine: NIOLoopBound<SwitchEngine>
    private let tunnel: RebindingDatagramSocket
    /// The VMs' port sockets.
    private let channels: Mutex<[any Channel]>
    private let sweeper: NIOLoopBound<RepeatedTask>
    private let pathTimer: NIOLoopBound<RepeatedTask>
    private let logger: Logger

    /// Largest tunnel datagram: a 9216-byte jumbo frame plus the seal, in a relay's envelope.
    static let maximumDatagram = 9216 + TunnelCrypto.overhead + RelayEnvelope.maximumOverhead
    /// Datagrams read per `recvmmsg`.
    static let vectorReadCount = 16

    /// The UDP address the tunnel socket is bound to (useful with port 0).
    public let tunnelAddress: SocketAddress

    /// A port to create: the VM, its VIOLIN, the socket the switch binds and the VM's own socket.
    public struct PortSpec: Sendable {
        /// VM name.
        public var vm: String
        /// Its VIOLIN.
        public var violin: Violin
        /// Unix datagram socket the switch binds for this port.
        public var switchSocket: String
        /// Unix datagram socket of the VM's NIC, where the switch sends frames.
        public var vmSocket: String

        /// Creates a port spec.
        public init(vm: String, violin: Violin, switchSocket: String, vmSocket: String) {
            self.vm = vm
            self.violin = violin
            self.switchSocket = switchSocket
            self.vmSocket = vmSocket
        }
    }

    /// A tunnel to create.
    public struct TunnelSpec: Sendable {
        /// Peer name.
        public var name: String
        /// Peer's tunnel address.
        public var address: HostPort
        /// The relays it keeps sessions with, when it is not publicly reachable (issue 15); by id, since a member
        /// may name a relay this peer has not heard of yet.
        public var relays: [PeerID]
        /// Its NAT as it measured itself (a hole punch is tried only where both NATs allow it).
        public var nat: NATType
        /// The public half of its exchange key pair: datagrams to it are sealed with a key only the two derive.
        /// Empty: the cluster's keys alone seal them (a peer that gossips none).
        public var exchangeKey: [UInt8]

        /// Creates a tunnel spec.
        public init(
            name: String,
            address: HostPort,
            relays: [PeerID] = [],
            nat: NATType = .unknown,
            exchangeKey: [UInt8] = []
        ) {
            self.name = name
            self.address = address
            self.relays = relays
            self.nat = nat
            self.exchangeKey = exchangeKey
        }
    }

    private init(
        group: MultiThreadedEventLoopGroup,
        engine: NIOLoopBound<SwitchEngine>,
        tunnel: RebindingDatagramSocket,
        channels: [any Channel],
        sweeper: NIOLoopBound<RepeatedTask>,
        pathTimer: NIOLoopBound<RepeatedTask>,
        tunnelAddress: SocketAddress,
        logger: Logger
    ) {
        self.group = group
        self.engine = engine
        self.tunnel = tunnel
        self.channels = Mutex(channels)
        self.sweeper = sweeper
        self.pathTimer = pathTimer
        self.tunnelAddress = tunnelAddress
        self.logger = logger
    }

    /// Binds every socket; throws (and releases what it bound) if any cannot be bound.
    public static func start(
        me: String,
        bind: HostPort,
        crypto: TunnelCrypto,
        exchange: ExchangeKeyPair? = nil,
        violins: [Violin],
        ports: [PortSpec],
        tunnels: [TunnelSpec],
        session: UInt64,
        isRelay: Bool = false,
        logger: Logger
    ) async throws -> SwitchService {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        var bound: [any Channel] = []
        var tunnelSocket: RebindingDatagramSocket?
        do {
            let engine = try await loop.submit {
                NIOLoopBound(
                    SwitchEngine(
                        eventLoop: loop,
                        me: PeerID(name: me),
                        session: session,
                        crypto: crypto,
                        exchange: exchange,
                        violins: violins,
                        logger: logger
                    ),
                    eventLoop: loop
                )
            }.get()
            try await loop.submit { engine.value.isRelay = isRelay }.get()
            for tunnel in tunnels {
                let address = try SocketAddress.makeAddressResolvingHost(tunnel.address.host, port: tunnel.address.port)
                try await loop.submit { engine.value.addTunnel(tunnel, address: address) }.get()
            }
            let tunnel = try await RebindingDatagramSocket.bind(
                "tunnel",
                at: bind,
                // recvmmsg splits one buffer between the messages of a vector read: size it for all of them.
                receiveCapacity: Self.vectorReadCount * Self.maximumDatagram,
                loop: loop,
                logger: logger,
                bootstrap: DatagramBootstrap(group: loop)
                    .channelOption(.maxMessagesPerRead, value: 8)
                    .channelOption(.datagramVectorReadMessageCount, value: Self.vectorReadCount)
                    .channelOption(.socketOption(.so_rcvbuf), value: 4 << 20)
                    .channelOption(.socketOption(.so_sndbuf), value: 4 << 20)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(
                                SwitchTunnelHandler(engine: engine.value)
                            )
                        }
                    },
                attach: { engine.value.attachTunnel(channel: $0) }
            )
            tunnelSocket = tunnel

            for spec in ports {
                bound.append(try await Self.bindPort(spec, loop: loop, engine: engine))
            }
            let sweeper = try await loop.submit {
                NIOLoopBound(
                    loop.scheduleRepeatedTask(initialDelay: .seconds(30), delay: .seconds(30)) { _ in
                        engine.value.expire(now: .now)
                    },
                    eventLoop: loop
                )
            }.get()
            let pathTimer = try await loop.submit {
                NIOLoopBound(
                    loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
                        engine.value.maintainPaths(now: .now)
                    },
                    eventLoop: loop
                )
            }.get()
            let address = tunnel.localAddress
            logger.info(
                "Switch ready",
                metadata: [
                    "switch.bind": "\(address)", "switch.ports": "\(ports.count)", "switch.tunnels": "\(tunnels.count)",
                ]
            )
            return SwitchService(
                group: group,
                engine: engine,
                tunnel: tunnel,
                channels: bound,
                sweeper: sweeper,
                pathTimer: pathTimer,
                tunnelAddress: address,
                logger: logger
            )
        } catch {
            await tunnelSocket?.close()
            for channel in bound { try? await channel.close() }
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// Runs until graceful shutdown or cancellation, then closes every socket.
    public func run() async throws {
        try? await gracefulShutdown()
        await self.close()
    }

    /// Closes every socket and stops the event loop.
    public func close() async {
        let (sweeper, pathTimer) = (self.sweeper, self.pathTimer)
        try? await self.group.next().submit {
            sweeper.value.cancel()
            pathTimer.value.cancel()
        }.get()
        await self.tunnel.close()
        for channel in self.channels.withLock({ $0 }) { try? await channel.close() }
        try? await self.group.shutdownGracefully()
        self.logger.info("Switch stopped")
    }

    /// Adds the port of a VM new to this peer (a restore placed a lost peer's VM here); nothing if it has one.
    public func addPort(_ spec: PortSpec) async throws {
        let engine = self.engine
        let loop = self.group.next()
        let exists = try await loop.submit { engine.value.portIndex(spec.vm) != nil }.get()
        guard !exists else { return }
        let channel = try await Self.bindPort(spec, loop: loop, engine: engine)
        self.channels.withLock { $0.append(channel) }
    }

    /// Binds a port's socket and attaches it to the engine.
    private static func bindPort(
        _ spec: PortSpec,
        loop: any EventLoop,
        engine: NIOLoopBound<SwitchEngine>
    ) async throws -> any Channel {
        try FileManager.default.createDirectory(
            atPath: (spec.switchSocket as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true
        )
        let target = try UnixDatagramSocket.address(spec.vmSocket)
        let fd = try UnixDatagramSocket.bind(path: spec.switchSocket, receiveBuffer: 1 << 20, sendBuffer: 1 << 20)
        let port = try await loop.submit {
            engine.value.addPort(vm: spec.vm, violin: spec.violin, target: target)
        }.get()
        let channel: any Channel
        do {
            channel = try await DatagramBootstrap(group: loop)
                .channelOption(
                    .recvAllocator,
                    value: FixedSizeRecvByteBufferAllocator(capacity: Self.vectorReadCount * 9216)
                )
                .channelOption(.maxMessagesPerRead, value: 8)
                .channelOption(.datagramVectorReadMessageCount, value: Self.vectorReadCount)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            SwitchPortHandler(engine: engine.value, port: port)
                        )
                    }
                }
                .withBoundSocket(fd).get()
        } catch {
            Glibc.close(fd)
            throw error
        }
        try await loop.submit { engine.value.attach(channel: channel, fd: fd, to: port) }.get()
        return channel
    }

    /// Adds (or re-addresses) the tunnel to a peer.
    public func addTunnel(_ spec: TunnelSpec) async throws {
        let address = try SocketAddress.makeAddressResolvingHost(spec.address.host, port: spec.address.port)
        let engine = self.engine
        try await self.group.next().submit { engine.value.addTunnel(spec, address: address) }.get()
    }

    /// Sets the relays (peer names) this peer keeps tunnel sessions with (empty when it is publicly reachable) and
    /// its NAT type as measured.
    public func setRelays(_ names: [String], nat: NATType) async {
        let engine = self.engine
        try? await self.group.next().submit { engine.value.setRelays(names.map { PeerID(name: $0) }, nat: nat) }.get()
    }

    /// Takes the tunnel to a dead or departed peer down (kept, so it can come back).
    public func removeTunnel(name: String) async {
        let engine = self.engine
        try? await self.group.next().submit { engine.value.removeTunnel(id: PeerID(name: name)) }.get()
    }

    /// Switches to a new keyring (after a cluster-wide key change).
    public func replaceCrypto(_ crypto: TunnelCrypto) async {
        let engine = self.engine
        try? await self.group.next().submit { engine.value.replaceCrypto(crypto) }.get()
    }

    /// Tells the switch that `vm`'s QEMU has (re)started, so its port connects to the new NIC socket.
    public func vmStarted(_ vm: String) async {
        let engine = self.engine
        try? await self.group.next().submit { engine.value.vmStarted(vm) }.get()
    }

    /// CPU time the switch's event loop thread has used, in nanoseconds (benchmarks: cost per frame).
    public func threadCPUNanoseconds() async throws -> UInt64 {
        try await self.group.next().submit {
            var ts = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
            return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
        }.get()
    }

    /// The current counters.
    public func status() async throws -> SwitchStatus {
        let engine = self.engine
        return try await self.group.next().submit { engine.value.status() }.get()
    }
}
