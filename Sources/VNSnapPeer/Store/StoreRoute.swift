import NIOCore
import VNSnapCore
import VNSnapCrypto

/// How to reach one store peer's image store (DESIGN §7, §10): straight to its address, or through one of its
/// relays, which joins the connection to one the store dials back (`SpliceRelay`). The store protocol on top is the
/// same either way, sealed end to end.
public struct StoreRoute: Sendable {
    /// The store's own address (`nil`: not reachable directly).
    public var direct: SocketAddress?
    /// Its relays' splice addresses, in the order to try them.
    public var relays: [SocketAddress]
    /// Try the relays before the direct address (the store is measured to be behind a NAT).
    public var relaysFirst: Bool
    /// The store and this peer, named in the splice ticket.
    public var store: PeerID
    public var me: PeerID
    /// The cluster's keys for splice tickets (purpose `splice`).
    public var tickets: TunnelCrypto?

    /// A route to `store`, from `me`.
    public init(
        direct: SocketAddress?,
        relays: [SocketAddress],
        relaysFirst: Bool,
        store: PeerID,
        me: PeerID,
        tickets: TunnelCrypto?
    ) {
        self.direct = direct
        self.relays = relays
        self.relaysFirst = relaysFirst
        self.store = store
        self.me = me
        self.tickets = tickets
    }

    /// A store reached at `address` only.
    public static func direct(_ address: SocketAddress) -> StoreRoute {
        StoreRoute(
            direct: address,
            relays: [],
            relaysFirst: false,
            store: PeerID(rawValue: 0),
            me: PeerID(rawValue: 0),
            tickets: nil
        )
    }

    /// One way to the store.
    enum Way {
        case direct(SocketAddress)
        case relay(SocketAddress)
    }

    /// The ways to try, in order.
    var ways: [Way] {
        let relayed = self.tickets == nil ? [] : self.relays.map(Way.relay)
        let straight = self.direct.map { [Way.direct($0)] } ?? []
        return self.relaysFirst ? relayed + straight : straight + relayed
    }

    /// How long one attempt may take to connect.
    static let connectTimeout = TimeAmount.seconds(3)

    /// Runs `body` on a framed connection to the store, the first way that works: a relay that cannot join this
    /// peer to the store answers why, and the next way is tried. What `body` throws is not retried.
    func withConnection<Result: Sendable>(
        _ body: (
            NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator, NIOAsyncChannelOutboundWriter<ByteBuffer>
        ) async throws -> Result
    ) async throws -> Result {
        var failures: [String] = []
        for way in self.ways {
            let (target, relayed, label) =
                switch way {
                case .direct(let address): (address, false, "direct to \(address)")
                case .relay(let address): (address, true, "through relay \(address)")
                }
            let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
            do {
                channel = try await StoreServer.connect(to: target)
            } catch {
                failures.append("\(label): \(error)")
                continue
            }
            let joined: Result? = try await channel.executeThenClose { inbound, outbound in
                var iterator = inbound.makeAsyncIterator()
                if relayed, let tickets = self.tickets {
                    let ticket = SpliceTicket(
                        role: .open,
                        from: self.me,
                        to: self.store,
                        token: SpliceTicket.newToken()
                    )
                    try await outbound.write(ByteBuffer(bytes: ticket.encode(crypto: tickets)))
                    let answer = try await iterator.next().flatMap { SpliceAnswer(Array($0.readableBytesView)) }
                    guard case .joined = answer else {
                        if case .refused(let reason) = answer {
                            failures.append("\(label): \(reason)")
                        } else {
                            failures.append("\(label): the relay closed the connection")
                        }
                        return nil
                    }
                }
                return try await body(iterator, outbound)
            }
            if let joined { return joined }
        }
        throw StoreError(
            .unreachable,
            "cannot reach the store: \(failures.isEmpty ? "no address" : failures.joined(separator: "; "))"
        )
    }
}
