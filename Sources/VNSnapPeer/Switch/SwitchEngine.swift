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
        /// Where the VM stands in the snapshot epochs (DESIGN §6).
        var gate = EpochGate()
        /// Frames held while the VM is cut, with their sender's epoch and tunnel.
        var heldFrames = CircularBuffer<HeldFrame>()
        /// Frames the epoch gate has held, and recorded as channel state, since the switch started.
        var heldTotal: UInt64 = 0
        var recordedTotal: UInt64 = 0
        /// The armed snapshot's measurements and channel log.
        var snapshot: PortSnapshot?
    }

    struct TunnelState {
        var name: String
        var id: PeerID
        var address: SocketAddress
        /// Seals and opens this peer's datagrams: the pair's keys when it gossips an exchange key (see
        /// `SwitchEngine+Keys`), else the cluster's.
        var crypto: TunnelCrypto
        var exchangeKey: [UInt8] = []
        var endToEnd = false
        var nextSequence: UInt64 = 0
        var inbound = InboundTunnelState()
        var counters = TrafficCounters()
        /// Whether membership sees the peer alive. A tunnel that goes down is kept, not deleted: its next
        /// sequence number must survive, or a revived tunnel would reuse nonces of this session.
        var up = true
        /// Frames sealed to this peer per VIOLIN and epoch (end-of-epoch markers announce them).
        var sent: [VNI: EpochCounts] = [:]
        /// Frames opened from this peer per VIOLIN and epoch, in its current session.
        var received: [VNI: EpochCounts] = [:]
        /// The relays the peer keeps sessions with (issue 15): empty when it is publicly reachable.
        var relays: [PeerID] = []
        /// Its NAT as it measured itself.
        var nat = NATType.unknown
        /// The direct path to a peer behind relays (punched), while either side has relays.
        var path: PathState<ContinuousClock.Instant>?
        /// Where the peer's tunnel socket was last seen from outside (a relay's envelope, or a direct datagram).
        var observed: SocketAddress?
        var observedText = ""
        /// The path probe last sent on the direct path and not answered yet.
        var probeOutstanding: UInt64?
        var probeCounter: UInt64 = 0
        /// When the peer last answered a path probe, and whether it did lately (a relay hop is used only then).
        var lastAnswer: ContinuousClock.Instant?
        var answering = true
        /// The timed punch's connect probe in flight through the relay, and when it left (`SwitchEngine+Punch`).
        var punchSent: (number: UInt64, at: ContinuousClock.Instant)?
        var punchCounter: UInt64 = 0
    }

    let eventLoop: any EventLoop
    let me: PeerID
    let session: UInt64
    var core: SwitchCore<ContinuousClock.Instant>
    /// The cluster's keys: relay envelopes, and tunnels to peers with no exchange key.
    var crypto: TunnelCrypto
    /// This run's key pair, for end-to-end tunnel keys.
    let exchange: ExchangeKeyPair?
    var ports: [PortState] = []
    /// Every tunnel ever added, in the order added (never removed: see `TunnelState.up`); mutated in place,
    /// so a frame costs one dictionary lookup (`tunnelIndex`) and no copy of a tunnel's counters.
    var tunnels: [TunnelState] = []
    /// Each peer's tunnel in `tunnels`.
    var tunnelIndex: [PeerID: Int] = [:]
    var tunnelChannel: (any Channel)?
    var tunnelDirty = false
    var rejected: [TunnelDropReason: UInt64] = [:]
    let violinsByVNI: [VNI: Violin]
    let logger: Logger
    let allocator = ByteBufferAllocator()
    var portsToFlush: [PortID] = []
    /// Channel drains of armed snapshots, per VIOLIN.
    var drains: [VNI: ViolinDrain] = [:]
    /// Called (on the loop) when a frame of the new epoch triggers a VM's cut.
    var onTrigger: ((String) -> Void)?
    /// Whether this peer forwards for others (the `relay` role).
    var isRelay = false
    /// The relays this peer keeps sessions with (it is not publicly reachable); empty otherwise.
    var myRelays: [PeerID] = []
    /// This peer's NAT as measured.
    var myNAT = NATType.unknown
    /// Where this peer's relays see its tunnel socket (their keepalive answers).
    var myMapping: String?
    var relayTable = RelayTable<SocketAddress, ContinuousClock.Instant>()
    /// Addresses as text, for the envelopes a relay writes (formatting one per frame would cost more than the MAC).
    var addressText: [SocketAddress: String] = [:]
    var lastKeepalive: ContinuousClock.Instant?

    init(
        eventLoop: any EventLoop,
        me: PeerID,
        session: UInt64,
        crypto: TunnelCrypto,
        exchange: ExchangeKeyPair? = nil,
        violins: [Violin],
        logger: Logger
    ) {
        self.eventLoop = eventLoop
        self.me = me
        self.session = session
        self.crypto = crypto
        self.exchange = exchange
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

    func attachTunnel(channel: any Channel) {
        self.tunnelChannel = channel
    }

    /// Takes the tunnel to a dead or departed peer down: nothing is sent to it, its datagrams are refused,
    /// and the addresses learned behind it are forgotten.
    func removeTunnel(id: PeerID) {
        guard let index = self.tunnelIndex[id], self.tunnels[index].up else { return }
        self.tunnels[index].up = false
        self.core.removeTunnel(id)
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
        if self.ports[port.rawValue].snapshot != nil { self.notePayload(port, length: length) }
        switch decision {
        case .port(let target):
            self.deliver(frame, to: target, epoch: epoch)
        case .tunnel(let peer):
            if let index = self.tunnelIndex[peer] { self.sendToTunnel(at: index, vni: vni, epoch: epoch, frame: frame) }
        case .flood(let vni, let excluding, let includeTunnels):
            for target in self.core.ports(in: vni) where target != excluding {
                self.deliver(frame, to: target, epoch: epoch)
            }
            if includeTunnels {
                for index in self.tunnels.indices where self.tunnels[index].up {
                    self.sendToTunnel(at: index, vni: vni, epoch: epoch, frame: frame)
                }
            }
        case .drop(let reason):
            self.ports[port.rawValue].counters.dropped(reason)
        }
    }

    /// A datagram that arrived on the tunnel socket from `remote`: a relay envelope, or a sealed datagram.
    func datagramFromTunnel(_ datagram: ByteBuffer, from remote: SocketAddress) {
        if let code = datagram.getInteger(at: datagram.readerIndex + 1, as: UInt8.self),
            let kind = TunnelHeader.Kind(rawValue: code), RelayEnvelope.isEnvelope(kind)
        {
            return self.envelopeFromTunnel(datagram, from: remote)
        }
        self.sealedFromTunnel(datagram, from: remote, relayed: false)
    }

    /// A sealed datagram, straight from `remote` or forwarded by a relay (`relayed`).
    func sealedFromTunnel(_ datagram: ByteBuffer, from remote: SocketAddress, relayed: Bool) {
        // Decrypt into a fresh buffer: the datagram is a slice of a shared vector-read buffer, so decrypting in
        // place would copy it first, and the frame waits in a port's outbox until the batch is flushed.
        var frame = self.allocator.buffer(capacity: datagram.readableBytes)
        var opened: Result<(header: TunnelHeader, payloadLength: Int, tunnel: Int), TunnelDropReason> = .failure(
            .malformed
        )
        frame.writeWithUnsafeMutableBytes(minimumWritableBytes: datagram.readableBytes) { output in
            opened = datagram.withUnsafeReadableBytes { input in
                // Cheap checks first, so floods of garbage cost no crypto.
                let header: TunnelHeader
                do throws(TunnelDropReason) {
                    header = try TunnelHeader.decode(datagram: input)
                } catch {
                    return .failure(error)
                }
                // Membership and keyring datagrams belong on the membership socket.
                guard
                    header.kind == .frame || header.kind == .endOfEpoch || header.kind == .pathProbe
                        || header.kind == .pathAck
                else { return .failure(.unknownKind) }
                guard header.destination == self.me else { return .failure(.misdirected) }
                guard let tunnel = self.tunnelIndex[header.source], self.tunnels[tunnel].up else {
                    return .failure(.unknownPeer)
                }
                do throws(TunnelDropReason) {
                    let (header, payloadLength) = try self.tunnels[tunnel].crypto.open(input, into: output)
                    return .success((header, payloadLength, tunnel))
                } catch {
                    return .failure(error)
                }
            }
            if case .success(let result) = opened { return result.payloadLength }
            return 0
        }
        let header: TunnelHeader
        let payloadLength: Int
        let tunnel: Int
        switch opened {
        case .success(let result):
            (header, payloadLength, tunnel) = result
        case .failure(let reason):
            self.rejected[reason, default: 0] &+= 1
            return
        }
        let source = header.source
        let sessionBefore = self.tunnels[tunnel].inbound.session
        if let reason = self.tunnels[tunnel].inbound.admit(session: header.session, sequence: header.sequence) {
            // With several paths, a marker's other copies are expected, not replays.
            let multipath = header.kind == .endOfEpoch && reason == .replayed
            self.tunnels[tunnel].counters.dropped(multipath ? .duplicate : reason)
            return
        }
        if self.tunnels[tunnel].inbound.session != sessionBefore { self.senderRestarted(source) }
        if !relayed, self.tunnels[tunnel].path != nil { self.observe(tunnel, at: remote) }
        if header.kind == .pathProbe || header.kind == .pathAck {
            let payload = frame.getBytes(at: frame.readerIndex, length: payloadLength) ?? []
            return self.pathDatagram(header.kind, payload: payload, tunnel: tunnel, from: remote, relayed: relayed)
        }
        if header.kind == .endOfEpoch {
            let payload = frame.getBytes(at: frame.readerIndex, length: payloadLength) ?? []
            guard let marker = EndOfEpochMarker(header: header, payload: payload) else {
                self.tunnels[tunnel].counters.dropped(.malformed)
                return
            }
            self.endOfEpoch(marker, from: source)
            return
        }
        self.tunnels[tunnel].received[header.vni, default: EpochCounts()].add(header.epoch)
        if !self.drains.isEmpty { self.countForDrain(vni: header.vni, epoch: header.epoch, from: source) }
        self.tunnels[tunnel].counters.received(payloadLength)
        guard let (destination, sourceMAC) = frame.withUnsafeReadableBytes({ EthernetFrame.addresses(of: $0) }) else {
            self.tunnels[tunnel].counters.dropped(.runt)
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
            self.deliver(frame, to: target, epoch: header.epoch)
        case .flood(let vni, let excluding, _):
            for target in self.core.ports(in: vni) where target != excluding {
                self.deliver(frame, to: target, epoch: header.epoch)
            }
        case .tunnel:
            // SwitchCore never sends a tunnel's frame into another tunnel (split horizon).
            self.tunnels[tunnel].counters.dropped(.notLocal)
        case .drop(let reason):
            self.tunnels[tunnel].counters.dropped(reason)
        }
    }

    /// Frames a port may hold for a slow VM before dropping.
    static let portBacklogLimit = 512
    /// How soon a port with a backlog tries again.
    static let backlogRetry = TimeAmount.microseconds(50)

    /// Seals `frame` to the peer of tunnel `index` and writes it (flushed with the batch).
    func sendToTunnel(at index: Int, vni: VNI, epoch: UInt32, frame: ByteBuffer, kind: TunnelHeader.Kind = .frame) {
        guard let channel = self.tunnelChannel, self.tunnels[index].up else { return }
        let length = frame.readableBytes
        var datagram = channel.allocator.buffer(capacity: length + TunnelCrypto.overhead)
        datagram.moveWriterIndex(forwardBy: TunnelHeader.size)
        datagram.writeImmutableBuffer(frame)
        datagram.writeRepeatingByte(0, count: TunnelHeader.tagSize)
        let header = self.nextHeader(kind, vni: vni, epoch: epoch, tunnel: index)
        datagram.withUnsafeMutableReadableBytes { buffer in
            _ = self.tunnels[index].crypto.seal(header: header, payloadLength: length, in: buffer)
        }
        // Markers go on every path at once (the receiver keeps the first), frames on the best one. A frame with no
        // path (every relay of the peer down) is not counted as sent: markers announce only what left.
        guard self.transmit(datagram, tunnel: index, everyPath: kind == .endOfEpoch, channel: channel) else {
            self.tunnels[index].counters.dropped(.sendFailed)
            return
        }
        self.tunnels[index].counters.sent(length)
        if kind == .frame { self.tunnels[index].sent[vni, default: EpochCounts()].add(epoch) }
        self.tunnelDirty = true
    }

    /// The header of the next datagram sealed to tunnel `index`'s peer, taking its sequence number: every seal to a
    /// peer (frames, markers, envelopes through it, path probes) draws from this one counter, so no nonce repeats.
    func nextHeader(_ kind: TunnelHeader.Kind, vni: VNI, epoch: UInt32, tunnel index: Int) -> TunnelHeader {
        defer { self.tunnels[index].nextSequence += 1 }
        return TunnelHeader(
            kind: kind,
            vni: vni,
            source: self.me,
            destination: self.tunnels[index].id,
            session: self.session,
            epoch: epoch,
            keyID: 0,
            sequence: self.tunnels[index].nextSequence
        )
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

    /// A write to the tunnel socket failed.
    func tunnelWriteFailed() {
        self.rejected[.sendFailed, default: 0] &+= 1
    }
}

@available(*, unavailable)
extension SwitchEngine: Sendable {}
