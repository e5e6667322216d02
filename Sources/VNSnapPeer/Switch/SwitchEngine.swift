import Logging
import NIOCore
import VNSnapCore
import VNSnapCrypto

#if canImport(Glibc)
import Glibc
#endif

/// The data path of the VIOLIN switch: carries out `SwitchCore`'s decisions on real sockets.
///
/// Lives on one event loop, which owns every port and tunnel channel, so the forwarding table and
/// counters need no locks. Writes are flushed once per read batch (`flushPending`).
final class SwitchEngine {
    struct PortState {
        var vm: String
        var violin: Violin
        var channel: (any Channel)?
        var epoch: UInt32 = 0
        var counters = TrafficCounters()
        /// The port's bound socket, shared with the NIO channel that reads it; `nil` once closed.
        var fd: CInt?
        /// The VM NIC socket's address.
        var targetAddress: sockaddr_un
        /// Frames waiting for room in the VM's socket queue (the kernel keeps only a few datagrams per
        /// unix socket: net.unix.max_dgram_qlen, 10 by default), sent in order as room appears.
        var backlog = CircularBuffer<ByteBuffer>(initialCapacity: 16)
        var drainScheduled = false
        /// Frames of the current read batch, sent together with one `sendmmsg` in `flushPending`.
        var outbox: [ByteBuffer] = []
        /// Whether the port's socket is connected to the VM's (see `UnixDatagramSocket.connect`).
        var connected = false
        var lastConnectAttempt: ContinuousClock.Instant?
    }

    struct TunnelState {
        var name: String
        var id: PeerID
        var address: SocketAddress
        var nextSequence: UInt64 = 0
        var inbound = InboundTunnelState()
        var counters = TrafficCounters()
    }

    let eventLoop: any EventLoop
    let me: PeerID
    let session: UInt64
    private var core: SwitchCore<ContinuousClock.Instant>
    private var crypto: TunnelCrypto
    private var ports: [PortState] = []
    private var tunnels: [PeerID: TunnelState] = [:]
    private var tunnelOrder: [PeerID] = []
    private var tunnelChannel: (any Channel)?
    private var tunnelDirty = false
    private var rejected: [TunnelDropReason: UInt64] = [:]
    private let violinsByVNI: [VNI: Violin]
    private let logger: Logger
    private let allocator = ByteBufferAllocator()
    private var portsToFlush: [PortID] = []

    init(
        eventLoop: any EventLoop,
        me: PeerID,
        session: UInt64,
        crypto: TunnelCrypto,
        violins: [Violin],
        logger: Logger
    ) {
        self.eventLoop = eventLoop
        self.me = me
        self.session = session
        self.crypto = crypto
        self.core = SwitchCore()
        self.violinsByVNI = Dictionary(violins.map { ($0.vni, $0) }, uniquingKeysWith: { first, _ in first })
        self.logger = logger
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Topology

    /// Registers a VM port; returns its id. The channel is attached once bound.
    func addPort(vm: String, violin: Violin, target: sockaddr_un) -> PortID {
        let id = PortID(self.ports.count)
        self.ports.append(PortState(vm: vm, violin: violin, channel: nil, fd: nil, targetAddress: target))
        self.core.addPort(id, vni: violin.vni)
        return id
    }

    /// Attaches the NIO channel reading the port's socket `fd`; sends use `fd` until the channel closes.
    func attach(channel: any Channel, fd: CInt, to port: PortID) {
        self.ports[port.rawValue].channel = channel
        self.ports[port.rawValue].fd = fd
        channel.closeFuture.assumeIsolated().whenComplete { _ in
            self.ports[port.rawValue].fd = nil
        }
        self.connectIfNeeded(port)
    }

    /// The VM behind `vm`'s port has (re)started: connect to its new socket. A socket still connected to the
    /// old QEMU would refuse the new one's frames.
    func vmStarted(_ vm: String) {
        guard let index = self.ports.firstIndex(where: { $0.vm == vm }), let fd = self.ports[index].fd else { return }
        UnixDatagramSocket.disconnect(fd: fd)
        self.ports[index].connected = false
        self.ports[index].lastConnectAttempt = nil
        self.connectIfNeeded(PortID(index))
    }

    /// Connects a port to its VM's socket when it is not yet (QEMU started after the switch, or restarted).
    private func connectIfNeeded(_ port: PortID, now: ContinuousClock.Instant = .now) {
        guard !self.ports[port.rawValue].connected, let fd = self.ports[port.rawValue].fd else { return }
        if let last = self.ports[port.rawValue].lastConnectAttempt, last.duration(to: now) < .milliseconds(100) {
            return
        }
        self.ports[port.rawValue].lastConnectAttempt = now
        self.ports[port.rawValue].connected = UnixDatagramSocket.connect(
            fd: fd,
            to: &self.ports[port.rawValue].targetAddress
        )
    }

    func attachTunnel(channel: any Channel) {
        self.tunnelChannel = channel
    }

    func addTunnel(name: String, id: PeerID, address: SocketAddress) {
        if self.tunnels[id] != nil {
            self.tunnels[id]!.address = address  // !-safe, checked above
            return
        }
        self.tunnelOrder.append(id)
        self.tunnels[id] = TunnelState(name: name, id: id, address: address)
    }

    func expire(now: ContinuousClock.Instant) {
        self.core.expire(now: now)
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Data path

    /// A frame the VM on `port` sent.
    func frameFromPort(_ port: PortID, frame: ByteBuffer) {
        let length = frame.readableBytes
        self.ports[port.rawValue].counters.received(length)
        if !self.ports[port.rawValue].connected { self.connectIfNeeded(port) }
        guard
            let (destination, source) = frame.withUnsafeReadableBytes({ EthernetFrame.addresses(of: $0) })
        else {
            self.ports[port.rawValue].counters.dropped(.runt)
            return
        }
        let decision = self.core.forward(destination: destination, source: source, from: .port(port), now: .now)
        let epoch = self.ports[port.rawValue].epoch
        let vni = self.ports[port.rawValue].violin.vni
        switch decision {
        case .port(let target):
            self.sendToPort(target, frame: frame)
        case .tunnel(let peer):
            self.sendToTunnel(peer, vni: vni, epoch: epoch, frame: frame)
        case .flood(let vni, let excluding, let includeTunnels):
            for target in self.core.ports(in: vni) where target != excluding {
                self.sendToPort(target, frame: frame)
            }
            if includeTunnels {
                for peer in self.tunnelOrder {
                    self.sendToTunnel(peer, vni: vni, epoch: epoch, frame: frame)
                }
            }
        case .drop(let reason):
            self.ports[port.rawValue].counters.dropped(reason)
        }
    }

    /// A datagram that arrived on the tunnel socket.
    func datagramFromTunnel(_ datagram: ByteBuffer) {
        // Decrypt into a fresh buffer: the datagram is a slice of a shared vector-read buffer, so decrypting in
        // place would copy it first, and the frame waits in a port's outbox until the batch is flushed.
        var frame = self.allocator.buffer(capacity: datagram.readableBytes)
        var opened: Result<(header: TunnelHeader, payloadLength: Int), TunnelDropReason> = .failure(.malformed)
        frame.writeWithUnsafeMutableBytes(minimumWritableBytes: datagram.readableBytes) { output in
            opened = datagram.withUnsafeReadableBytes { input in
                // Cheap checks first, so floods of garbage cost no crypto.
                let header: TunnelHeader
                do throws(TunnelDropReason) {
                    header = try TunnelHeader.decode(datagram: input)
                } catch {
                    return .failure(error)
                }
                guard header.destination == self.me else { return .failure(.misdirected) }
                guard self.tunnels[header.source] != nil else { return .failure(.unknownPeer) }
                do throws(TunnelDropReason) {
                    return .success(try self.crypto.open(input, into: output))
                } catch {
                    return .failure(error)
                }
            }
            if case .success(let result) = opened { return result.payloadLength }
            return 0
        }
        let header: TunnelHeader
        let payloadLength: Int
        switch opened {
        case .success(let result):
            (header, payloadLength) = result
        case .failure(let reason):
            self.rejected[reason, default: 0] &+= 1
            return
        }
        let source = header.source
        // !-safe (here and below): the source's tunnel was checked before opening.
        if let reason = self.tunnels[source]!.inbound.admit(session: header.session, sequence: header.sequence) {
            self.tunnels[source]!.counters.dropped(reason)
            return
        }
        self.tunnels[source]!.counters.received(payloadLength)
        guard let (destination, sourceMAC) = frame.withUnsafeReadableBytes({ EthernetFrame.addresses(of: $0) }) else {
            self.tunnels[source]!.counters.dropped(.runt)
            return
        }
        let decision = self.core.forward(
            destination: destination,
            source: sourceMAC,
            from: .tunnel(source, header.vni),
            now: .now
        )
        switch decision {
        case .port(let target):
            self.sendToPort(target, frame: frame)
        case .flood(let vni, let excluding, _):
            for target in self.core.ports(in: vni) where target != excluding {
                self.sendToPort(target, frame: frame)
            }
        case .tunnel:
            // SwitchCore never sends a tunnel's frame into another tunnel (split horizon).
            self.tunnels[source]!.counters.dropped(.notLocal)
        case .drop(let reason):
            self.tunnels[source]!.counters.dropped(reason)
        }
    }

    /// Frames a port may hold for a slow VM before dropping.
    static let portBacklogLimit = 512
    /// How soon a port with a backlog tries again.
    static let backlogRetry = TimeAmount.microseconds(50)

    /// Frames per port sent with one `sendmmsg`.
    static let outboxLimit = 64

    private func sendToPort(_ port: PortID, frame: ByteBuffer) {
        guard self.ports[port.rawValue].backlog.isEmpty else {
            self.enqueue(frame, on: port)
            return
        }
        if self.ports[port.rawValue].outbox.isEmpty { self.portsToFlush.append(port) }
        self.ports[port.rawValue].outbox.append(frame)
        if self.ports[port.rawValue].outbox.count >= Self.outboxLimit { self.flushOutbox(port) }
    }

    /// Sends a port's outbox; what the VM's queue has no room for goes to the backlog, in order.
    private func flushOutbox(_ port: PortID) {
        let frames = self.ports[port.rawValue].outbox
        self.ports[port.rawValue].outbox.removeAll(keepingCapacity: true)
        guard !frames.isEmpty else { return }
        guard let fd = self.ports[port.rawValue].fd else {
            for _ in frames { self.ports[port.rawValue].counters.dropped(.sendFailed) }
            return
        }
        var next = 0
        while next < frames.count {
            let (sent, failure) = UnixDatagramSocket.send(
                fd: fd,
                to: &self.ports[port.rawValue].targetAddress,
                frames: frames[next...]
            )
            for frame in frames[next..<next + sent] { self.ports[port.rawValue].counters.sent(frame.readableBytes) }
            next += sent
            switch failure {
            case .none:
                return
            case .queueFull:
                for frame in frames[next...] { self.enqueue(frame, on: port) }
                return
            case .unreachable:
                self.ports[port.rawValue].counters.dropped(.sendFailed)
                self.ports[port.rawValue].connected = false
                next += 1
            }
        }
    }

    private func trySend(_ frame: ByteBuffer, on port: PortID) -> Result<Void, UnixDatagramSocket.SendFailure> {
        guard let fd = self.ports[port.rawValue].fd else { return .failure(.unreachable) }
        return frame.withUnsafeReadableBytes { bytes in
            do throws(UnixDatagramSocket.SendFailure) {
                try UnixDatagramSocket.send(fd: fd, to: &self.ports[port.rawValue].targetAddress, bytes: bytes)
                return .success(())
            } catch {
                return .failure(error)
            }
        }
    }

    private func enqueue(_ frame: ByteBuffer, on port: PortID) {
        guard self.ports[port.rawValue].backlog.count < Self.portBacklogLimit else {
            self.ports[port.rawValue].counters.dropped(.queueFull)
            return
        }
        // Copy: the frame may be a slice of a large vector-read buffer that must not stay pinned.
        var copy = self.allocator.buffer(capacity: frame.readableBytes)
        copy.writeImmutableBuffer(frame)
        self.ports[port.rawValue].backlog.append(copy)
        self.scheduleDrain(port)
    }

    private func scheduleDrain(_ port: PortID) {
        guard !self.ports[port.rawValue].drainScheduled else { return }
        self.ports[port.rawValue].drainScheduled = true
        self.eventLoop.assumeIsolated().scheduleTask(in: Self.backlogRetry) {
            self.ports[port.rawValue].drainScheduled = false
            self.drainBacklog(port)
        }
    }

    private func drainBacklog(_ port: PortID) {
        while let frame = self.ports[port.rawValue].backlog.first {
            switch self.trySend(frame, on: port) {
            case .success:
                self.ports[port.rawValue].counters.sent(frame.readableBytes)
                self.ports[port.rawValue].backlog.removeFirst()
            case .failure(.queueFull):
                self.scheduleDrain(port)
                return
            case .failure(.unreachable):
                self.ports[port.rawValue].counters.dropped(.sendFailed)
                self.ports[port.rawValue].connected = false
                self.ports[port.rawValue].backlog.removeFirst()
            }
        }
    }

    private func sendToTunnel(_ peer: PeerID, vni: VNI, epoch: UInt32, frame: ByteBuffer) {
        guard let channel = self.tunnelChannel, var tunnel = self.tunnels[peer] else { return }
        let length = frame.readableBytes
        var datagram = channel.allocator.buffer(capacity: length + TunnelCrypto.overhead)
        datagram.moveWriterIndex(forwardBy: TunnelHeader.size)
        datagram.writeImmutableBuffer(frame)
        datagram.writeRepeatingByte(0, count: TunnelHeader.tagSize)
        let header = TunnelHeader(
            kind: .frame,
            vni: vni,
            source: self.me,
            destination: peer,
            session: self.session,
            epoch: epoch,
            keyID: 0,
            sequence: tunnel.nextSequence
        )
        tunnel.nextSequence += 1
        datagram.withUnsafeMutableReadableBytes { buffer in
            _ = self.crypto.seal(header: header, payloadLength: length, in: buffer)
        }
        channel.write(AddressedEnvelope(remoteAddress: tunnel.address, data: datagram), promise: nil)
        tunnel.counters.sent(length)
        self.tunnels[peer] = tunnel
        self.tunnelDirty = true
    }

    /// Flushes every channel written to since the last flush; call at the end of each read batch.
    func flushPending() {
        for port in self.portsToFlush { self.flushOutbox(port) }
        self.portsToFlush.removeAll(keepingCapacity: true)
        if self.tunnelDirty {
            self.tunnelDirty = false
            self.tunnelChannel?.flush()
        }
    }

    /// A read from a port's socket failed.
    func portReadFailed(_ port: PortID) {
        self.ports[port.rawValue].counters.dropped(.receiveFailed)
    }

    /// A write to the tunnel socket failed.
    func tunnelWriteFailed() {
        self.rejected[.sendFailed, default: 0] &+= 1
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Status

    func status() -> SwitchStatus {
        let learned = self.core.learnedAddresses(now: .now)
        return SwitchStatus(
            ports: self.ports.map {
                SwitchStatus.Port(
                    vm: $0.vm,
                    violin: $0.violin.name,
                    vni: $0.violin.vni.rawValue,
                    epoch: $0.epoch,
                    counters: $0.counters
                )
            },
            tunnels: self.tunnelOrder.compactMap { self.tunnels[$0] }.map {
                SwitchStatus.Tunnel(
                    peer: $0.name,
                    address: $0.address.displayString,
                    remoteSession: $0.inbound.session,
                    nextSequence: $0.nextSequence,
                    counters: $0.counters
                )
            },
            rejected: self.rejected,
            learned: Dictionary(
                learned.map { (self.violinsByVNI[$0.key]?.name ?? "vni-\($0.key)", $0.value.count) },
                uniquingKeysWith: +
            )
        )
    }
}

@available(*, unavailable)
extension SwitchEngine: Sendable {}
