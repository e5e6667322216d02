import Logging
import NIOCore
import VNSnapCore
import VNSnapCrypto

/// Sealing and sending: membership and snapshot messages to a member's address, routed on all its paths.
extension MembershipEngine {
    /// Seals and queues a datagram; `flush` sends what was queued.
    func sendSealed(
        kind: TunnelHeader.Kind,
        payload: [UInt8],
        to address: String,
        keyID: UInt32? = nil,
        through other: (any Channel)? = nil
    ) {
        guard let channel = other ?? self.channel else { return }
        let header = TunnelHeader(
            kind: kind,
            vni: VNI(0)!,  // !-safe, 0 is in range
            source: self.swim.me.id,
            // The recipient when known, so a datagram captured on its way to one member is refused by another.
            destination: self.memberAt[address] ?? PeerID(rawValue: 0),
            session: self.session,
            epoch: UInt32(clamping: self.election.term),
            keyID: 0,
            sequence: self.sequence
        )
        self.sequence += 1
        let datagram = self.crypto.sealed(header: header, payload: payload, keyID: keyID)
        if other == nil {
            self.route(datagram, to: address, member: self.memberAt[address])
        } else if let remote = self.resolve(address) {
            channel.write(AddressedEnvelope(remoteAddress: remote, data: ByteBuffer(bytes: datagram)), promise: nil)
        }
        self.datagramsSent &+= 1
        self.dirty = true
    }

    /// Largest datagram accepted: a snapshot message with a blob (manifests), sealed.
    static let maximumDatagram =
        max(SWIMCodec.maximumSize, SnapshotCodec.maximumBlobMessageSize) + TunnelCrypto.overhead

    /// Sends a snapshot protocol message to a member (to itself: handed straight back as an event).
    func sendSnapshot(_ message: SnapshotMessage, to peer: PeerID) {
        if peer == self.swim.me.id {
            self.emit(.snapshot(message))
            return
        }
        guard let member = self.swim.state(of: peer) else {
            self.logger.debug("Snapshot message for an unknown member", metadata: ["snapshot.peer": "\(peer)"])
            return
        }
        do {
            self.sendSealed(kind: .snapshot, payload: try SnapshotCodec.encode(message), to: member.address)
            self.flush()
        } catch {
            self.logger.error("Snapshot message does not fit a datagram", metadata: ["snapshot.error": "\(error)"])
        }
    }

    func send(_ message: SWIMMessage, to address: String) {
        do {
            self.sendSealed(kind: .membership, payload: try SWIMCodec.encode(message), to: address)
        } catch {
            // The instance sizes every message to fit; this would be a bug, not bad input.
            self.logger.error("Membership message does not fit a datagram", metadata: ["membership.error": "\(error)"])
        }
    }

    func flush() {
        guard self.dirty else { return }
        self.dirty = false
        self.channel?.flush()
    }

    func resolve(_ address: String) -> SocketAddress? {
        if let cached = self.addresses[address] { return cached }
        guard let hostPort = HostPort(address),
            let resolved = try? SocketAddress.makeAddressResolvingHost(hostPort.host, port: hostPort.port)
        else {
            self.logger.warning("Cannot resolve a membership address", metadata: ["membership.address": "\(address)"])
            return nil
        }
        if self.addresses.count > 4096 { self.addresses.removeAll() }
        self.addresses[address] = resolved
        return resolved
    }
}

/// Store streams across domains: a relay asks a store behind a NAT to dial back (`SpliceRelay`).
extension MembershipEngine {
    /// Asks `store` (through every path to it, its relays' sessions included) to dial this relay's splice port
    /// back for `token`; returns why it cannot, or `nil` once asked.
    func askToDial(store: PeerID, token: [UInt8], port: Int) -> String? {
        guard let member = self.swim.state(of: store), member.status.isActive else {
            return "store \(store) is not an alive member"
        }
        guard token.count == 16, (1...65535).contains(port) else { return "bad splice token or port" }
        self.sendSealed(kind: .storeDial, payload: token + [UInt8(port >> 8), UInt8(port & 0xff)], to: member.address)
        self.flush()
        return nil
    }

    /// A relay's dial-back request: the token and the splice port, at the relay's membership host.
    func storeDial(_ payload: [UInt8], from relay: PeerID, remote: SocketAddress) -> MembershipEvent? {
        // Only a member with the relay role joins store streams; another asking is refused (counted malformed).
        guard payload.count == 18, self.swim.state(of: relay)?.metadata.roles.contains(.relay) == true else {
            return nil
        }
        let port = Int(payload[16]) << 8 | Int(payload[17])
        let host = self.swim.state(of: relay).flatMap { HostPort($0.address)?.host } ?? remote.ipAddress
        guard let host, port > 0 else { return nil }
        return .storeDial(relay: HostPort(host: host, port: port), token: Array(payload[0..<16]))
    }
}
