import Logging
import NIOCore
import VNSnapCore
import VNSnapCrypto

/// What membership tells the rest of the daemon.
public enum MembershipEvent: Sendable, Hashable {
    /// A member is alive (new, back, or moved): its tunnel should be up at this address, sealed end to end with its
    /// exchange key.
    case memberUp(
        name: String,
        tunnel: String,
        relays: [PeerID] = [],
        nat: NATType = .unknown,
        exchangeKey: [UInt8] = []
    )
    /// The relays this peer keeps sessions with (empty: it is publicly reachable), or its own NAT type, changed.
    case relaysChanged([String], nat: NATType)
    /// A member died or left: its tunnel goes down.
    case memberDown(name: String)
    /// The cluster's keyring changed: the switch seals and opens with it from now on.
    case keyringChanged(Keyring)
    /// A snapshot protocol message from another peer (its sealed source checked).
    case snapshot(SnapshotMessage)
    /// A relay asks this store to dial its splice endpoint back for `token` (a peer outside the NAT waits there).
    case storeDial(relay: HostPort, token: [UInt8])
}

/// The membership shell on its event loop: opens and seals datagrams, feeds `SWIMInstance` and `Election`,
/// and carries out what they decide (sends, ticks, tunnel changes, durable terms, keyring sync).
final class MembershipEngine {
    typealias Instant = ContinuousClock.Instant

    let eventLoop: any EventLoop
    let clusterName: String
    let session: UInt64
    var swim: SWIMInstance<Instant, SystemRandomNumberGenerator>
    var election: Election
    let storedTermAtStart: UInt64
    let termStore: TermStore
    var termError: String?
    var keyring: Keyring
    let keyringPath: String
    var crypto: TunnelCrypto
    var channel: (any Channel)?
    /// A second socket, send-only, for dial-backs (a datagram from an address the peer never sent to).
    var dialChannel: (any Channel)?
    var sequence: UInt64 = 0
    var inbound: [PeerID: InboundTunnelState] = [:]
    /// The key each peer last sealed with: a keyring sync to a peer behind a rotation uses it.
    var lastKeyID: [PeerID: UInt32] = [:]
    var keyringSentAt: [PeerID: Instant] = [:]
    var lastUnknownKey: (description: String, at: Instant)?
    var rejected: [TunnelDropReason: UInt64] = [:]
    var datagramsSent: UInt64 = 0
    var datagramsReceived: UInt64 = 0
    var addresses: [String: SocketAddress] = [:]
    /// Which member answers at each membership address.
    var memberAt: [String: PeerID] = [:]
    var seeds: [String] = []
    let startedAt = ContinuousClock.now
    var seedWarningAt: Instant?
    var tick: (task: Scheduled<Void>, at: Instant)?
    var dirty = false
    /// Sessions of the peers this one relays for (issue 15); empty without the `relay` role.
    var relayTable = RelayTable<SocketAddress, Instant>()
    var relaysCheckedAt: Instant?
    /// The relay names and NAT type last told to the switch.
    var announcedRelays: ([String], NATType) = ([], .unknown)
    /// How many relays a peer that is not publicly reachable keeps.
    var relayCount = 3
    /// Where each member's datagrams last came from directly, when not its own address (its NAT's mapping).
    var seenAt: [PeerID: (address: String, socket: SocketAddress)] = [:]
    let emit: @Sendable (MembershipEvent) -> Void
    let logger: Logger

    init(
        eventLoop: any EventLoop,
        me: MemberState,
        settings: SWIMSettings,
        clusterName: String,
        session: UInt64,
        keyring: Keyring,
        keyringPath: String,
        termStore: TermStore,
        storedTerm: UInt64,
        emit: @escaping @Sendable (MembershipEvent) -> Void,
        logger: Logger
    ) {
        self.eventLoop = eventLoop
        var me = me
        me.metadata.keyringGeneration = keyring.generation
        me.metadata.keyringDigest = keyring.digest
        self.swim = SWIMInstance(me: me, settings: settings, rng: SystemRandomNumberGenerator(), now: .now)
        self.election = Election(storedTerm: storedTerm)
        self.storedTermAtStart = storedTerm
        self.termStore = termStore
        self.clusterName = clusterName
        self.session = session
        self.keyring = keyring
        self.keyringPath = keyringPath
        self.crypto = TunnelCrypto(keyring: keyring, clusterName: clusterName, purpose: "membership")
        self.emit = emit
        self.logger = logger
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Events in

    func join(seeds: [String]) {
        let now = ContinuousClock.now
        self.seeds = seeds
        if !seeds.isEmpty {
            self.logger.info("Joining", metadata: ["membership.seeds": "\(seeds.joined(separator: ","))"])
        }
        self.execute(self.swim.join(seeds: seeds, now: now), now: now)
        self.evaluateElection()
    }

    func leave() {
        let now = ContinuousClock.now
        guard !self.swim.hasLeft else { return }
        self.logger.info("Leaving the cluster")
        self.execute(self.swim.leave(now: now), now: now)
    }

    /// A datagram from `remote`: a relay envelope, or a sealed datagram for this peer.
    func receive(_ datagram: ByteBuffer, from remote: SocketAddress) {
        let now = ContinuousClock.now
        guard datagram.readableBytes <= Self.maximumDatagram + Self.envelopeOverhead else {
            return self.reject(.oversized)
        }
        let bytes = Array(datagram.readableBytesView)
        if bytes.count > 1, let kind = TunnelHeader.Kind(rawValue: bytes[1]), RelayEnvelope.isEnvelope(kind) {
            return self.receiveEnvelope(bytes, from: remote, now: now)
        }
        self.receiveSealed(bytes, from: remote, relayedFrom: nil, now: now)
    }

    /// Room an envelope takes around a datagram (header, meta, tag).
    static let envelopeOverhead = RelayEnvelope.maximumOverhead

    /// A sealed datagram, straight from `remote` or forwarded by a relay (`relayedFrom`: who sent it to the relay,
    /// and where the relay saw it): opened, checked against replays, then handed to SWIM or the keyring.
    func receiveSealed(
        _ bytes: [UInt8],
        from remote: SocketAddress,
        relayedFrom: (origin: PeerID, observed: String)?,
        now: Instant
    ) {
        let header: TunnelHeader
        let payload: [UInt8]
        do throws(TunnelDropReason) {
            (header, payload) = try self.crypto.opened(bytes)
        } catch {
            if error == .unknownKey { self.noteUnknownKey(bytes, from: remote, now: now) }
            return self.reject(error)
        }
        // Addressed to this peer, or to nobody in particular (a first contact through a seed address).
        guard header.destination == self.swim.me.id || header.destination == PeerID(rawValue: 0),
            header.source != self.swim.me.id, relayedFrom.map({ $0.origin == header.source }) ?? true
        else {
            return self.reject(.misdirected)
        }
        // Answers to a forwarded datagram go to the sender's member address (routed on all its paths).
        let replyAddress =
            relayedFrom.map { self.swim.state(of: header.source)?.address ?? $0.observed } ?? remote.displayString
        if let reason = self.inbound[header.source, default: InboundTunnelState()].admit(
            session: header.session,
            sequence: header.sequence
        ) {
            // Sent on several paths at once (address, public mapping, relays): the later copies are expected.
            let multipath =
                !self.swim.me.metadata.relays.isEmpty || self.seenAt[header.source] != nil
                || !(self.swim.state(of: header.source)?.metadata.relays.isEmpty ?? true)
            return self.reject(reason == .replayed && multipath ? .duplicate : reason)
        }
        self.datagramsReceived &+= 1
        self.lastKeyID[header.source] = header.keyID
        if relayedFrom == nil, self.seenAt[header.source]?.socket != remote {
            let text = remote.displayString
            self.seenAt[header.source] = text == self.swim.state(of: header.source)?.address ? nil : (text, remote)
        }
        if header.keyID != self.keyring.primary.keyID {
            // Sealed with a key that is no longer primary: the sender missed a rotation (it may even be one we
            // hold dead or left, and it cannot open what we send). Bring it up to date with a key it has.
            self.sendKeyring(to: header.source, address: replyAddress, now: now)
        }
        self.observe(term: UInt64(header.epoch))
        switch header.kind {
        case .membership:
            let message: SWIMMessage
            do throws(SWIMCodec.Failure) {
                message = try SWIMCodec.decode(payload)
            } catch {
                return self.reject(error == .badVersion ? .badVersion : .malformed)
            }
            // The sealed source is the authority: a message may not speak for another peer.
            guard message.from == header.source else { return self.reject(.malformed) }
            self.execute(
                self.swim.onMessage(message, from: replyAddress, relayed: relayedFrom != nil, now: now),
                now: now
            )
        case .keyring:
            guard let offered = Keyring(syncPayload: payload) else { return self.reject(.malformed) }
            self.adopt(offered, from: replyAddress)
        case .snapshot:
            let message: SnapshotMessage
            do throws(WireFailure) {
                message = try SnapshotCodec.decode(payload)
            } catch {
                return self.reject(error == .badVersion ? .badVersion : .malformed)
            }
            guard message.from == header.source else { return self.reject(.malformed) }
            self.emit(.snapshot(message))
        case .storeDial:
            guard let dial = self.storeDial(payload, from: header.source, remote: remote) else {
                return self.reject(.malformed)
            }
            self.emit(dial)
        case .frame, .endOfEpoch, .relay, .relayed, .relayHello, .pathProbe, .pathAck:
            // Frames, markers and path probes belong on the tunnel socket; envelopes never nest.
            self.reject(.unknownKind)
        }
        self.flush()
    }

    func onTick() {
        let now = ContinuousClock.now
        self.tick = nil
        self.execute(self.swim.onTick(now: now), now: now)
        if !self.swim.hasJoined { self.evaluateElection() }  // a lone founder's wait may have ended
        self.syncKeyrings(now: now)
        self.maintainRelays(now: now)
        self.warnIfAlone(now: now)
        self.flush()
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Directives out

    func execute(_ directives: [SWIMDirective<Instant>], now: Instant) {
        var changed = false
        for directive in directives {
            switch directive {
            case .send(let message, let address):
                self.send(message, to: address)
            case .memberChanged(let state, let previous):
                changed = true
                self.memberChanged(state, previous: previous)
            case .scheduleTick(let at):
                self.schedule(at: at, now: now)
            case .dialBack(let message, let address):
                guard let dial = self.dialChannel, let payload = try? SWIMCodec.encode(message) else { continue }
                self.sendSealed(kind: .membership, payload: payload, to: address, through: dial)
                dial.flush()
            }
        }
        if changed { self.evaluateElection() }
        self.flush()
    }

    private func memberChanged(_ state: MemberState, previous: MemberStatus?) {
        self.memberAt[state.address] = state.id
        if !state.status.isActive { self.seenAt[state.id] = nil }
        if state.status != previous {
            self.logger.info(
                "Member \(state.status)",
                metadata: [
                    "member.name": "\(state.name)", "member.address": "\(state.address)",
                    "member.incarnation": "\(state.incarnation)",
                    "member.previous": "\(previous?.description ?? "new")",
                ]
            )
        }
        if state.status.isActive {
            self.emit(
                .memberUp(
                    name: state.name,
                    tunnel: state.metadata.tunnelAddress,
                    relays: state.metadata.relays,
                    nat: state.metadata.nat,
                    exchangeKey: state.metadata.exchangeKey
                )
            )
        } else {
            self.emit(.memberDown(name: state.name))
            self.keyringSentAt[state.id] = nil
        }
    }

    private func schedule(at: Instant, now: Instant) {
        if let current = self.tick {
            guard at < current.at else { return }
            current.task.cancel()
        }
        let delay = now.duration(to: at)
        let nanoseconds = max(0, delay.inNanoseconds)
        let task = self.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(nanoseconds)) { self.onTick() }
        self.tick = (task, at)
    }

    /// Says, 5 s after start and then every 30 s, that no seed has answered and what that may mean.
    private func warnIfAlone(now: Instant) {
        guard self.isWaitingForCluster, self.startedAt.duration(to: now) > .seconds(5) else { return }
        if let last = self.seedWarningAt, last.duration(to: now) < .seconds(30) { return }
        self.seedWarningAt = now
        self.logger.warning(
            """
            No seed has answered yet; running alone and retrying. If the seeds are up and reachable, check that this \
            peer's cluster name and keyring match theirs: a peer that missed a key rotation must install the \
            cluster's current key with `vnsnap-peer keys install KEY`.
            """,
            metadata: ["membership.seeds": "\(self.seeds.joined(separator: ","))"]
        )
    }

    /// A send was refused (an unreachable peer's ICMP error, reported on a later read).
    func sendFailed() {
        self.reject(.sendFailed)
    }

    func reject(_ reason: TunnelDropReason) {
        self.rejected[reason, default: 0] &+= 1
    }

    /// Remembers (and logs, at most every 10 s) a datagram sealed with a key this peer does not have.
    func noteUnknownKey(_ datagram: [UInt8], from remote: SocketAddress, now: Instant) {
        // The header decoder knows where the key id sits; the datagram opened that far before failing.
        let keyID = datagram.withUnsafeBytes { try? TunnelHeader.decode(datagram: $0) }?.keyID ?? 0
        let description = "from \(remote.displayString) sealed with key id \(String(keyID, radix: 16))"
        let last = self.lastUnknownKey?.at
        self.lastUnknownKey = (description, now)
        if last.map({ $0.duration(to: now) > .seconds(10) }) ?? true {
            self.logger.warning(
                """
                Cannot open membership datagrams: their key is not in this peer's keyring (generation \
                \(self.keyring.generation)). If the cluster rotated keys while this peer was away, install its current \
                key with `vnsnap-peer keys install KEY`; otherwise the sender belongs to another cluster.
                """,
                metadata: ["membership.datagram": "\(description)"]
            )
        }
    }
}

@available(*, unavailable)
extension MembershipEngine: Sendable {}
