/// One membership message between peers (SWIM §3–4, Lifeguard §IV), with piggybacked gossip.
public struct SWIMMessage: Sendable, Hashable {
    /// What the message asks or answers.
    public enum Body: Sendable, Hashable {
        /// "Are you alive?" to `target`; answered by `ack` with the same sequence number.
        case ping(sequence: UInt32, target: PeerID)
        /// "Probe `target` at `address` for me" (indirect probe); answered by `ack`, or `nack` (Lifeguard).
        case pingRequest(sequence: UInt32, target: PeerID, address: String)
        /// The probed member answered; `observed` is the address it saw the ping come from (issue 15: how a peer
        /// learns its public mapping without a STUN server; empty when relayed).
        case ack(sequence: UInt32, observed: String = "")
        /// The relay is alive but heard nothing from the target in time (Lifeguard's buddy system).
        case nack(sequence: UInt32)
        /// Only the piggybacked updates: sent to a few random members while there is news (memberlist's gossip
        /// loop), so news spreads in a few hundred milliseconds instead of riding on probes alone.
        case gossip
        /// A batch of the sender's full state; a request is answered with the receiver's own state.
        case pushPull(isResponse: Bool, members: [MemberState])
    }

    /// The sender.
    public var from: PeerID
    /// The request or answer.
    public var body: Body
    /// Member updates riding along.
    public var gossip: [SWIMUpdate]

    /// Creates a message.
    public init(from: PeerID, body: Body, gossip: [SWIMUpdate] = []) {
        self.from = from
        self.body = body
        self.gossip = gossip
    }
}

/// A member update as gossiped: the state, and who asserted it (so suspicions can count independent
/// confirmations, Lifeguard §IV.B).
public struct SWIMUpdate: Sendable, Hashable {
    /// The member's state.
    public var state: MemberState
    /// The peer that asserted this state first.
    public var origin: PeerID

    /// Creates an update.
    public init(state: MemberState, origin: PeerID) {
        self.state = state
        self.origin = origin
    }
}

/// What the SWIM instance asks its shell to do.
public enum SWIMDirective<Instant: InstantProtocol>: Sendable, Hashable where Instant.Duration == Duration {
    /// Send `message` to the membership address `address`.
    case send(SWIMMessage, to: String)
    /// A member appeared, or its status or metadata changed (`previous` is `nil` for a new member).
    case memberChanged(MemberState, previous: MemberStatus?)
    /// Call `onTick` again at this time (the instance never sleeps).
    case scheduleTick(at: Instant)
    /// Send a datagram with no news (`message`) to `address` from another socket than the membership one, which
    /// the peer there never sent to: if it arrives, that peer's NAT or firewall lets unsolicited datagrams in
    /// (issue 15, a dial-back as libp2p's AutoNAT does).
    case dialBack(SWIMMessage, to: String)
}
