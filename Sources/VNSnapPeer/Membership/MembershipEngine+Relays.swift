import Logging
import NIOCore
import VNSnapCore
import VNSnapCrypto

/// Membership across domains (issue 15): the relays this peer keeps sessions with when it is not publicly
/// reachable, forwarding for others when it is a relay, and sending to a member on every path it has at once
/// (its address, its public mapping, each of its relays), so it is suspected only when all of them fail.
extension MembershipEngine {
    /// Between two keepalives to each relay: well inside the UDP timeouts of NATs (30 s and more; 20 s in the tests).
    static let relayKeepalive = Duration.seconds(5)

    /// Chooses this peer's relays when it is not publicly reachable and gossips them (at once: a peer others
    /// cannot reach is suspected within seconds), and keeps their sessions alive.
    func maintainRelays(now: Instant) {
        let me = self.swim.me
        var chosen: [PeerID] = []
        if me.metadata.nat != .public {
            let alive = self.swim.otherMembers.map(\.state).filter { $0.status == .alive }
            let offered = alive.filter { $0.metadata.roles.contains(.relay) && $0.metadata.nat == .public }
            let relays = offered.map { relay in
                RelayChoice.Relay(
                    id: relay.id,
                    domain: HostPort(relay.address)?.host ?? relay.address,
                    load: alive.filter { $0.metadata.relays.contains(relay.id) }.count
                )
            }
            chosen = RelayChoice.choose(for: me.id, from: relays, k: self.relayCount, current: me.metadata.relays)
        }
        var changed = false
        if chosen != me.metadata.relays {
            changed = true
            var metadata = me.metadata
            metadata.relays = chosen
            self.swim.updateMetadata(metadata)
            self.logger.info(
                "Relays chosen",
                metadata: ["membership.relays": "\(chosen.compactMap { self.swim.state(of: $0)?.name })"]
            )
        }
        let names = chosen.compactMap { self.swim.state(of: $0)?.name }
        if names != self.announcedRelays.0 || me.metadata.nat != self.announcedRelays.1 {
            self.announcedRelays = (names, me.metadata.nat)
            self.emit(.relaysChanged(names, nat: me.metadata.nat))
        }
        if !changed, let last = self.relaysCheckedAt, last.duration(to: now) < Self.relayKeepalive { return }
        self.relaysCheckedAt = now
        self.relayTable.expire(now: now)
        for relay in chosen {
            guard let state = self.swim.state(of: relay) else { continue }
            self.sendEnvelope(.hello(answer: false, observed: ""), inner: [], to: relay, address: state.address)
        }
    }

    /// Sends a sealed datagram to the member at `address` on every path it has: the address itself, its public
    /// mapping, and through each of its relays. The copies carry one sequence number, so the member takes the first
    /// and refuses the others as replays.
    func route(_ datagram: [UInt8], to address: String, member: PeerID?) {
        guard let channel = self.channel else { return }
        if let remote = self.resolve(address) {
            channel.write(AddressedEnvelope(remoteAddress: remote, data: ByteBuffer(bytes: datagram)), promise: nil)
        }
        guard let member, let state = self.swim.state(of: member) else { return }
        // Where its datagrams come from: its NAT lets answers in there while the mapping lasts.
        if let seen = self.seenAt[member], seen.address != address {
            self.swim.noteSent(to: seen.address)
            channel.write(
                AddressedEnvelope(remoteAddress: seen.socket, data: ByteBuffer(bytes: datagram)),
                promise: nil
            )
        }
        guard !state.metadata.relays.isEmpty else { return }
        if state.metadata.relays.contains(self.swim.me.id), let session = self.relayTable.address(of: member, now: .now)
        {
            // This peer is one of its relays: where its session says it is.
            channel.write(AddressedEnvelope(remoteAddress: session, data: ByteBuffer(bytes: datagram)), promise: nil)
        }
        let mapped = state.metadata.publicAddress
        if !mapped.isEmpty, mapped != address, mapped != self.seenAt[member]?.address, let remote = self.resolve(mapped)
        {
            self.swim.noteSent(to: mapped)
            channel.write(AddressedEnvelope(remoteAddress: remote, data: ByteBuffer(bytes: datagram)), promise: nil)
        }
        for relay in state.metadata.relays where relay != self.swim.me.id {
            guard let relayState = self.swim.state(of: relay), relayState.status.isActive else { continue }
            self.sendEnvelope(.forward(target: member), inner: datagram, to: relay, address: relayState.address)
        }
    }

    /// Seals an envelope to the hop `peer` at `address` and queues it.
    func sendEnvelope(_ meta: RelayEnvelope.Meta, inner: [UInt8], to peer: PeerID, address: String) {
        guard let remote = self.resolve(address) else { return }
        self.sendEnvelope(meta, inner: inner, to: peer, address: remote)
    }

    /// Seals an envelope to the hop `peer` at the socket address `remote` and queues it.
    func sendEnvelope(_ meta: RelayEnvelope.Meta, inner: [UInt8], to peer: PeerID, address remote: SocketAddress) {
        guard let channel = self.channel else { return }
        let header = TunnelHeader(
            kind: .relay,
            vni: VNI(0)!,  // !-safe, 0 is in range
            source: self.swim.me.id,
            destination: peer,
            session: self.session,
            epoch: UInt32(clamping: self.election.term),
            keyID: 0,
            sequence: self.sequence
        )
        self.sequence += 1
        let datagram = inner.withUnsafeBytes {
            RelayEnvelope.wrap(meta, header: header, inner: $0, crypto: &self.crypto)
        }
        channel.write(AddressedEnvelope(remoteAddress: remote, data: ByteBuffer(bytes: datagram)), promise: nil)
        self.datagramsSent &+= 1
        self.dirty = true
    }

    /// An envelope arrived: a keepalive (this peer is a relay), a datagram to forward, or one forwarded to us.
    func receiveEnvelope(_ bytes: [UInt8], from remote: SocketAddress, now: Instant) {
        let opened = bytes.withUnsafeBytes { RelayEnvelope.opened($0, for: self.swim.me.id, crypto: &self.crypto) }
        let envelope: RelayEnvelope
        switch opened {
        case .success(let value): envelope = value
        case .failure(let reason):
            if reason == .unknownKey { self.noteUnknownKey(bytes, from: remote, now: now) }
            return self.reject(reason)
        }
        let header = envelope.header
        if let reason = self.inbound[header.source, default: InboundTunnelState()].admit(
            session: header.session,
            sequence: header.sequence
        ) {
            return self.reject(reason)
        }
        let inner = Array(bytes[envelope.innerOffset...])
        switch envelope.meta {
        case .hello(let answer, _):
            guard !answer else { return }
            guard self.isRelay else { return self.reject(.notRelay) }
            self.relayTable.hello(from: header.source, at: remote, now: now)
        case .forward(let target):
            guard self.isRelay else { return self.reject(.notRelay) }
            switch self.relayTable.forward(from: header.source, to: target, bytes: inner.count, now: now) {
            case .success(let address):
                let meta = RelayEnvelope.Meta.forwarded(origin: header.source, observed: remote.displayString)
                self.sendEnvelope(meta, inner: inner, to: target, address: address)
            case .failure(let refusal):
                self.reject(refusal == .noSession ? .noRelaySession : .relayRateCapped)
            }
        case .forwarded(let origin, let observed):
            self.receiveSealed(inner, from: remote, relayedFrom: (origin, observed), now: now)
        }
        self.flush()
    }

    var isRelay: Bool { self.swim.me.metadata.roles.contains(.relay) }

    /// What this peer's relay forwarded, per peer name, for `status`.
    func relayServed(now: Instant) -> [String: RelayTable<SocketAddress, Instant>.Served] {
        Dictionary(
            self.relayTable.served.map { (self.swim.state(of: $0.key)?.name ?? "\($0.key)", $0.value) },
            uniquingKeysWith: { a, _ in a }
        )
    }
}
