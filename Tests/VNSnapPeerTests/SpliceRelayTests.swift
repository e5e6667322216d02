import Foundation
import Logging
import NIOCore
import Testing
import VNSnapCore
import VNSnapCrypto
import VNSnapImage

@testable import VNSnapPeer

/// Store streams through a relay over real loopback TCP: the opener reaches the relay only, the store dials the
/// relay back (asked here directly, as membership would), and the store protocol runs end to end through the splice.
@Suite(.serialized) struct SpliceRelayTests {
    static let replica = ReplicaKey(snapshot: 21, vm: "relay", kind: .memory)
    static let opener = PeerID(name: "h1")
    static let store = PeerID(name: "h2")

    /// A relay whose dial-back requests go to `fixture`'s first store, unless `refuse` says why not.
    static func relay(_ fixture: StoreFixture, tickets: TunnelCrypto, refuse: String? = nil) async throws -> (
        SpliceRelay, Task<Void, any Error>
    ) {
        let server = fixture.stores[0].server
        let relay = try await SpliceRelay.bind(
            host: "127.0.0.1",
            port: 0,
            tickets: { tickets },
            dial: { store, token, port in
                if let refuse { return refuse }
                guard store == Self.store else { return "store \(store) is not an alive member" }
                let answer = SpliceTicket(role: .answer, from: store, to: PeerID(rawValue: 0), token: token)
                let address = try! SocketAddress(ipAddress: "127.0.0.1", port: port)
                Task { await server.dialBack(relay: address, answer: answer.encode(crypto: tickets)) }
                return nil
            },
            logger: Logger(label: "test")
        )
        return (relay, Task { try await relay.run() })
    }

    /// Through `relay`, after a direct address where nothing listens (a store behind a NAT, from outside).
    static func route(through relay: SpliceRelay, tickets: TunnelCrypto) -> StoreRoute {
        StoreRoute(
            direct: try! SocketAddress(ipAddress: "127.0.0.1", port: 1),
            relays: [relay.address],
            relaysFirst: false,
            store: Self.store,
            me: Self.opener,
            tickets: tickets
        )
    }

    @Test func test_putAndGet_throughARelay_storeDialsBack_replicaComesBackWhole_andTheRelayCountsIt() async throws {
        let fixture = try await StoreFixture.start(budgets: [64 << 20])
        defer { fixture.stop() }
        let tickets = TunnelCrypto(keyring: Keyring(keys: [fixture.key])!, clusterName: "test", purpose: "splice")
        let (relay, task) = try await Self.relay(fixture, tickets: tickets)
        defer { task.cancel() }
        let route = Self.route(through: relay, tickets: tickets)
        let chunks = StoreServerTests.chunks(6)
        let keys = StoreFixture.keys(fixture.key)
        try await StoreClient.put(
            Self.replica,
            reserve: 8 << 20,
            chunks: chunks,
            to: route,
            key: fixture.key,
            keys: keys
        )
        let back = try await StoreClient.get(Self.replica, from: route, key: fixture.key, keys: keys)
        #expect(back.map(\.0) == chunks.map(\.0) && back.map(\.1) == chunks.map(\.1))
        #expect(fixture.stores[0].store.usage().replicas.map(\.sealed) == [true])
        let status = relay.status
        #expect(status.joined == 2 && status.refused == 0)
        #expect(status.bytes >= UInt64(chunks.reduce(0) { $0 + $1.1.count }) * 2)
    }

    @Test func test_relayThatCannotAskTheStore_refusesWithTheReason_andTheClientSaysSo() async throws {
        let fixture = try await StoreFixture.start(budgets: [64 << 20])
        defer { fixture.stop() }
        let tickets = TunnelCrypto(keyring: Keyring(keys: [fixture.key])!, clusterName: "test", purpose: "splice")
        let (relay, task) = try await Self.relay(fixture, tickets: tickets, refuse: "store h2 is not an alive member")
        defer { task.cancel() }
        let keys = StoreFixture.keys(fixture.key)
        do {
            _ = try await StoreClient.get(
                Self.replica,
                from: Self.route(through: relay, tickets: tickets),
                key: fixture.key,
                keys: keys
            )
            Issue.record("expected the relay to refuse")
        } catch let error as StoreError {
            #expect(error.code == .unreachable && error.message.contains("not an alive member"), "\(error)")
            #expect(error.message.contains("direct to [IPv4]127.0.0.1:1: "), "both ways named: \(error)")
        }
        #expect(relay.status.refused == 1 && relay.status.joined == 0)
    }

    @Test func test_ticketUnderAnotherClustersKey_isRefused_andNoStoreIsAsked() async throws {
        let fixture = try await StoreFixture.start(budgets: [64 << 20])
        defer { fixture.stop() }
        let tickets = TunnelCrypto(keyring: Keyring(keys: [fixture.key])!, clusterName: "test", purpose: "splice")
        let (relay, task) = try await Self.relay(fixture, tickets: tickets)
        defer { task.cancel() }
        let stranger = TunnelCrypto(
            keyring: Keyring(keys: [SecretKey.generate()])!,
            clusterName: "test",
            purpose: "splice"
        )
        do {
            _ = try await StoreClient.get(
                Self.replica,
                from: Self.route(through: relay, tickets: stranger),
                key: fixture.key,
                keys: StoreFixture.keys(fixture.key)
            )
            Issue.record("expected the relay to close the connection")
        } catch let error as StoreError {
            #expect(error.code == .unreachable && error.message.contains("closed"), "\(error)")
        }
        #expect(relay.status.joined == 0)
    }

    @Test func test_ticket_roundTrips_andAnyFlippedByteIsRefused() throws {
        let tickets = TunnelCrypto(
            keyring: Keyring(keys: [SecretKey.generate()])!,
            clusterName: "test",
            purpose: "splice"
        )
        let ticket = SpliceTicket(role: .open, from: Self.opener, to: Self.store, token: SpliceTicket.newToken())
        let bytes = ticket.encode(crypto: tickets)
        #expect(bytes.count == SpliceTicket.size)
        #expect(try SpliceTicket.decode(bytes, crypto: tickets) == ticket)
        for index in bytes.indices {
            var flipped = bytes
            flipped[index] ^= 0x01
            #expect(throws: TunnelDropReason.self) { try SpliceTicket.decode(flipped, crypto: tickets) }
        }
        #expect(throws: TunnelDropReason.truncated) {
            try SpliceTicket.decode(Array(bytes.dropLast()), crypto: tickets)
        }
        #expect(SpliceAnswer(SpliceAnswer.refused("no session").bytes) == .refused("no session"))
        #expect(SpliceAnswer(SpliceAnswer.joined.bytes) == .joined)
        #expect(SpliceAnswer(Array("VNSP maybe".utf8)) == nil)
    }
}
