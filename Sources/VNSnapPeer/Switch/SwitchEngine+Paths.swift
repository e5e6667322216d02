import Logging
import NIOCore
import VNSnapCore
import VNSnapCrypto

/// Tunnels across domains (issue 15): frames to a peer behind relays go through one of them until a punched
/// direct path is proven both ways; markers go on every path; a relay forwards envelopes it cannot open.
extension SwitchEngine {
    typealias Instant = ContinuousClock.Instant

    /// Between two keepalives to each relay: inside any NAT's UDP timeout, and short, since a restarted relay
    /// forwards nothing to this peer until the next one arrives.
    static let relayKeepalive = Duration.seconds(2)

    /// Probes go once a second: an attempt lasts three, so both sides see each other's probes answered twice.
    static var pathSettings: PathState<Instant>.Settings {
        var settings = PathState<Instant>.Settings()
        settings.retry = .seconds(3)
        settings.attempts = 5
        return settings
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Sending

    /// Writes a sealed datagram to a tunnel's peer: directly when it is publicly reachable or a punched path is
    /// proven, else through its first live relay; on every path at once when `everyPath`.
    @discardableResult
    func transmit(_ datagram: ByteBuffer, tunnel index: Int, everyPath: Bool, channel: any Channel) -> Bool {
        let tunnel = self.tunnels[index]
        let direct = tunnel.relays.isEmpty || tunnel.path?.path == .direct
        var written = false
        if direct || everyPath {
            let address = tunnel.relays.isEmpty ? tunnel.address : tunnel.observed ?? tunnel.address
            channel.write(AddressedEnvelope(remoteAddress: address, data: datagram), promise: nil)
            if direct, !everyPath { return true }
            written = true
        }
        for hop in self.relayHops(tunnel, all: everyPath) {
            if let hop {
                self.sendEnvelope(.forward(target: tunnel.id), inner: datagram, hop: hop, channel: channel)
            } else if let address = self.relayTable.address(of: tunnel.id, now: .now) {
                // This peer is one of its relays: straight to where its session says it is.
                channel.write(AddressedEnvelope(remoteAddress: address, data: datagram), promise: nil)
            } else {
                continue
            }
            written = true
        }
        return written
    }

    /// The relays to send through to a tunnel's peer (`nil`: this peer is one of them): all that are up when `all`,
    /// else the first that answers its probes, or the first one up when none does (they may all be slow at once).
    func relayHops(_ tunnel: TunnelState, all: Bool) -> [Int?] {
        var answering: [Int?] = []
        var silent: [Int?] = []
        for relay in tunnel.relays {
            if relay == self.me {
                answering.append(nil)
            } else if let hop = self.tunnelIndex[relay], self.tunnels[hop].up {
                if self.tunnels[hop].answering { answering.append(hop) } else { silent.append(hop) }
            }
        }
        if all { return answering + silent }
        return [(answering.first ?? silent.first)].compactMap { $0 }
    }

    /// Seals an envelope around `inner` to the peer of tunnel `hop` (at `address`, or its tunnel address).
    func sendEnvelope(
        _ meta: RelayEnvelope.Meta,
        inner: ByteBuffer,
        hop: Int,
        address: SocketAddress? = nil,
        channel: any Channel
    ) {
        let header = self.nextHeader(.relay, vni: VNI(0)!, epoch: 0, tunnel: hop)  // !-safe, 0 is in range
        // Straight into the datagram's buffer: the frame is copied once.
        let size = RelayEnvelope.size(of: meta, inner: inner.readableBytes)
        var buffer = channel.allocator.buffer(capacity: size)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { output in
            inner.withUnsafeReadableBytes {
                RelayEnvelope.wrap(meta, header: header, inner: $0, into: output, crypto: &self.crypto)
            }
        }
        channel.write(
            AddressedEnvelope(remoteAddress: address ?? self.tunnels[hop].address, data: buffer),
            promise: nil
        )
        self.tunnelDirty = true
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Receiving

    /// An envelope on the tunnel socket: a keepalive or a datagram to forward (this peer is a relay), a keepalive's
    /// answer, or a datagram a relay forwarded to this peer.
    func envelopeFromTunnel(_ datagram: ByteBuffer, from remote: SocketAddress) {
        let now = ContinuousClock.now
        let opened = datagram.withUnsafeReadableBytes { RelayEnvelope.opened($0, for: self.me, crypto: &self.crypto) }
        let envelope: RelayEnvelope
        switch opened {
        case .success(let value): envelope = value
        case .failure(let reason):
            self.rejected[reason, default: 0] &+= 1
            return
        }
        let header = envelope.header
        guard let hop = self.tunnelIndex[header.source], self.tunnels[hop].up else {
            self.rejected[.unknownPeer, default: 0] &+= 1
            return
        }
        let sessionBefore = self.tunnels[hop].inbound.session
        if let reason = self.tunnels[hop].inbound.admit(session: header.session, sequence: header.sequence) {
            self.tunnels[hop].counters.dropped(reason)
            return
        }
        if self.tunnels[hop].inbound.session != sessionBefore { self.senderRestarted(header.source) }
        let inner = datagram.getSlice(
            at: datagram.readerIndex + envelope.innerOffset,
            length: datagram.readableBytes - envelope.innerOffset
        )
        guard let channel = self.tunnelChannel, let inner else { return }
        switch envelope.meta {
        case .hello(answer: true, let observed):
            self.myMapping = observed
        case .hello(answer: false, _):
            guard self.isRelay else {
                self.rejected[.notRelay, default: 0] &+= 1
                return
            }
            self.relayTable.hello(from: header.source, at: remote, now: now)
            let answer = RelayEnvelope.Meta.hello(answer: true, observed: self.text(remote))
            self.sendEnvelope(answer, inner: ByteBuffer(), hop: hop, address: remote, channel: channel)
        case .forward(let target):
            guard self.isRelay else {
                self.rejected[.notRelay, default: 0] &+= 1
                return
            }
            guard let next = self.tunnelIndex[target], self.tunnels[next].up else {
                self.rejected[.unknownPeer, default: 0] &+= 1
                return
            }
            switch self.relayTable.forward(from: header.source, to: target, bytes: inner.readableBytes, now: now) {
            case .success(let address):
                let meta = RelayEnvelope.Meta.forwarded(origin: header.source, observed: self.text(remote))
                self.sendEnvelope(meta, inner: inner, hop: next, address: address, channel: channel)
            case .failure(let refusal):
                self.rejected[refusal == .noSession ? .noRelaySession : .relayRateCapped, default: 0] &+= 1
            }
        case .forwarded(let origin, let observed):
            if let index = self.tunnelIndex[origin], self.tunnels[index].path != nil,
                self.tunnels[index].path?.path != .direct, self.tunnels[index].observedText != observed,
                let host = HostPort(observed),
                let address = try? SocketAddress(ipAddress: host.host, port: host.port)
            {
                // Where the relay sees the peer: the address a hole punch aims at.
                self.tunnels[index].observed = address
                self.tunnels[index].observedText = observed
            }
            self.sealedFromTunnel(inner, from: remote, relayed: true)
        }
    }

    /// A datagram straight from a peer behind relays: its NAT maps it at `remote` now.
    func observe(_ index: Int, at remote: SocketAddress) {
        guard self.tunnels[index].observed != remote else { return }
        self.tunnels[index].observed = remote
        self.tunnels[index].observedText = self.text(remote)
    }

    /// A path probe or its answer (payload: the probe's number).
    func pathDatagram(
        _ kind: TunnelHeader.Kind,
        payload: [UInt8],
        tunnel index: Int,
        from remote: SocketAddress,
        relayed: Bool
    ) {
        guard payload.count == 8, let channel = self.tunnelChannel else { return }
        let now = ContinuousClock.now
        let number = payload.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard !relayed else { return self.punchDatagram(kind, number: number, tunnel: index, now: now) }
        self.tunnels[index].lastAnswer = kind == .pathAck ? now : self.tunnels[index].lastAnswer
        if kind == .pathProbe {
            // Answer on the path it came by; and it proves the way in.
            self.sendPath(.pathAck, number: number, tunnel: index, to: remote, channel: channel)
            self.apply(self.tunnels[index].path?.roundTrip(outbound: false, now: now), tunnel: index)
        } else if self.tunnels[index].probeOutstanding == number {
            self.tunnels[index].probeOutstanding = nil
            self.apply(self.tunnels[index].path?.roundTrip(outbound: true, now: now), tunnel: index)
        }
        self.tunnelDirty = true
    }

    func sendPath(
        _ kind: TunnelHeader.Kind,
        number: UInt64,
        tunnel index: Int,
        to address: SocketAddress,
        channel: any Channel
    ) {
        let payload = self.sealedPath(kind, number: number, tunnel: index, channel: channel)
        channel.write(AddressedEnvelope(remoteAddress: address, data: payload), promise: nil)
    }

    /// The next numbered probe of the direct path to tunnel `index`'s peer, awaited as its outstanding one.
    func sendDirectProbe(tunnel index: Int, to target: SocketAddress, channel: any Channel) {
        self.tunnels[index].probeCounter += 1
        self.tunnels[index].probeOutstanding = self.tunnels[index].probeCounter
        self.sendPath(.pathProbe, number: self.tunnels[index].probeCounter, tunnel: index, to: target, channel: channel)
    }

    /// A path probe or answer sealed to tunnel `index`'s peer.
    func sealedPath(_ kind: TunnelHeader.Kind, number: UInt64, tunnel index: Int, channel: any Channel) -> ByteBuffer {
        var payload = channel.allocator.buffer(capacity: 8 + TunnelCrypto.overhead)
        payload.moveWriterIndex(forwardBy: TunnelHeader.size)
        payload.writeInteger(number)
        payload.writeRepeatingByte(0, count: TunnelHeader.tagSize)
        let header = self.nextHeader(kind, vni: VNI(0)!, epoch: 0, tunnel: index)  // !-safe, 0 is in range
        payload.withUnsafeMutableReadableBytes {
            _ = self.tunnels[index].crypto.seal(header: header, payloadLength: 8, in: $0)
        }
        return payload
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Paths

    /// This peer's relays changed (empty: it is publicly reachable).
    func setRelays(_ relays: [PeerID], nat: NATType) {
        if relays != self.myRelays { self.lastKeepalive = nil }  // new relays hear from us on the next tick
        self.myRelays = relays
        self.myNAT = nat
        if relays.isEmpty { self.myMapping = nil }
        for index in self.tunnels.indices { self.updatePath(index) }
    }

    /// A tunnel needs a path state while either side sits behind relays.
    func updatePath(_ index: Int) {
        let needed = !self.tunnels[index].relays.isEmpty || !self.myRelays.isEmpty
        // A pair where both NATs pick a port per destination has nothing to aim at: it stays relayed. A side not
        // classified yet is given the benefit of the doubt (the attempts are bounded).
        let (mine, theirs) = (self.myNAT, self.tunnels[index].nat)
        let punchable =
            NATType.punchable(mine, theirs) || (mine == .unknown && theirs != .symmetric)
            || (theirs == .unknown && mine != .symmetric)
        if !needed {
            self.tunnels[index].path = nil
        } else if self.tunnels[index].path == nil
            || (self.tunnels[index].path?.punchable != punchable && self.tunnels[index].path?.path != .direct)
        {
            self.tunnels[index].path = PathState(punchable: punchable, settings: Self.pathSettings, now: .now)
        }
    }

    /// Once a second: keepalives to this peer's relays, hole punches, and probes of punched paths.
    func maintainPaths(now: Instant) {
        guard let channel = self.tunnelChannel else { return }
        if self.lastKeepalive.map({ $0.duration(to: now) >= Self.relayKeepalive }) ?? true {
            self.lastKeepalive = now
            self.relayTable.expire(now: now)
            for relay in self.myRelays {
                guard let hop = self.tunnelIndex[relay], self.tunnels[hop].up else { continue }
                self.sendEnvelope(.hello(answer: false, observed: ""), inner: ByteBuffer(), hop: hop, channel: channel)
            }
        }
        // Every relay some tunnel goes through is probed each second: a dead one is passed over within two.
        let hops = Set(self.tunnels.filter(\.up).flatMap(\.relays)).compactMap { self.tunnelIndex[$0] }
        for hop in hops where self.tunnels[hop].up {
            // A relay probed for the first time has until its first answer is due.
            let last = self.tunnels[hop].lastAnswer ?? now
            self.tunnels[hop].lastAnswer = last
            self.tunnels[hop].answering = last.duration(to: now) < .milliseconds(2500)
            self.sendPath(.pathProbe, number: 0, tunnel: hop, to: self.tunnels[hop].address, channel: channel)
        }
        for index in self.tunnels.indices where self.tunnels[index].up && self.tunnels[index].path != nil {
            let target =
                self.tunnels[index].relays.isEmpty
                ? self.tunnels[index].address : self.tunnels[index].observed ?? self.tunnels[index].address
            if self.tunnels[index].path?.path == .direct {
                if self.tunnels[index].probeOutstanding != nil {
                    self.apply(self.tunnels[index].path?.lost(now: now), tunnel: index)
                }
            } else {
                self.apply(self.tunnels[index].path?.tick(now: now), tunnel: index)
                guard case .punching = self.tunnels[index].path?.path else { continue }
            }
            self.sendDirectProbe(tunnel: index, to: target, channel: channel)
        }
        channel.flush()
    }

    func apply(_ action: PathState<Instant>.Action?, tunnel index: Int) {
        guard let action else { return }
        switch action {
        case .punch:
            // maintainPaths sends this second's probe; the pair's initiator also times one by the relay.
            self.startTimedPunch(index, now: .now)
        case .useDirect:
            self.logger.info(
                "Direct path to \(self.tunnels[index].name) proven both ways",
                metadata: ["tunnel.address": "\(self.tunnels[index].observedText)"]
            )
        case .useRelay:
            self.logger.info("Direct path to \(self.tunnels[index].name) lost; back to its relays")
        }
    }

    /// The path as `status` shows it (the relay is the one `transmit` picks).
    func pathDescription(_ tunnel: TunnelState) -> String {
        guard let path = tunnel.path, !tunnel.relays.isEmpty else { return "direct" }
        if path.path == .direct { return "punched" }
        let punching = path.path == .relayed ? "" : " (punching)"
        guard let hop = self.relayHops(tunnel, all: false).first else { return "no path" }
        guard let hop else { return "direct (its relay)" + punching }
        return "via relay \(self.tunnels[hop].name)" + punching
    }

    /// An address as text, cached (the relay writes the sender's into every envelope it forwards).
    func text(_ address: SocketAddress) -> String {
        if let known = self.addressText[address] { return known }
        let text = address.displayString
        if self.addressText.count >= 4096 { self.addressText.removeAll(keepingCapacity: true) }
        self.addressText[address] = text
        return text
    }
}
