import Logging
import NIOCore
import VNSnapCore

/// Hole punches timed by the relay's round trip (issue 15; libp2p's DCUtR): the pair's lower id sends a *connect*
/// path probe through the relay and times its answer; then a *sync*, and punches half that round trip later, which
/// is when the other side, punching as the sync arrives, sends too. Both sides' NATs then hold a mapping toward the
/// other as the other's first probe arrives. The once-a-second probes of `maintainPaths` go on as well, so a punch
/// still happens when a relay is slow or a sync is lost.
extension SwitchEngine {
    /// Probe numbers with these bits travel through the relay and time a punch (direct probes count from 1).
    static let punchConnect: UInt64 = 1 << 63
    static let punchSync: UInt64 = 1 << 62

    /// A punch attempt began: the initiator of the pair starts timing it.
    func startTimedPunch(_ index: Int, now: Instant) {
        guard self.me.rawValue < self.tunnels[index].id.rawValue, !self.tunnels[index].relays.isEmpty,
            let channel = self.tunnelChannel
        else { return }
        self.tunnels[index].punchCounter += 1
        let number = Self.punchConnect | self.tunnels[index].punchCounter
        self.tunnels[index].punchSent = (number, now)
        self.sendThroughRelay(.pathProbe, number: number, tunnel: index, channel: channel)
    }

    /// A path probe or answer that came through a relay: a connect or sync to answer (and, for a sync, the moment to
    /// punch), or the answer that times the initiator's punch.
    func punchDatagram(_ kind: TunnelHeader.Kind, number: UInt64, tunnel index: Int, now: Instant) {
        guard number & (Self.punchConnect | Self.punchSync) != 0, let channel = self.tunnelChannel else { return }
        if kind == .pathProbe {
            self.sendThroughRelay(.pathAck, number: number, tunnel: index, channel: channel)
            if number & Self.punchSync != 0 { self.punchNow(index) }
            return
        }
        guard let sent = self.tunnels[index].punchSent, sent.number == number, number & Self.punchConnect != 0 else {
            return
        }
        self.tunnels[index].punchSent = nil
        let roundTrip = sent.at.duration(to: now)
        self.logger.info(
            "Hole punch to \(self.tunnels[index].name) timed by the relay's round trip",
            metadata: ["tunnel.relay.rtt.ms": "\(roundTrip.inNanoseconds / 1_000_000)"]
        )
        self.sendThroughRelay(
            .pathProbe,
            number: Self.punchSync | (number & ~Self.punchConnect),
            tunnel: index,
            channel: channel
        )
        channel.flush()
        let peer = self.tunnels[index].id
        self.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(roundTrip.inNanoseconds / 2)) {
            guard self.tunnelIndex[peer] == index else { return }
            self.punchNow(index)
        }
    }

    /// Sends a probe straight to where the relay sees the peer, if a punch is under way.
    func punchNow(_ index: Int) {
        guard case .punching = self.tunnels[index].path?.path, let target = self.tunnels[index].observed,
            let channel = self.tunnelChannel
        else { return }
        self.sendDirectProbe(tunnel: index, to: target, channel: channel)
        channel.flush()
    }

    /// A path probe or answer to a tunnel's peer through its relay.
    private func sendThroughRelay(_ kind: TunnelHeader.Kind, number: UInt64, tunnel index: Int, channel: any Channel) {
        _ = self.transmit(
            self.sealedPath(kind, number: number, tunnel: index, channel: channel),
            tunnel: index,
            everyPath: false,
            channel: channel
        )
    }
}
