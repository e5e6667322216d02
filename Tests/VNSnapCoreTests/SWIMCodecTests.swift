import Testing
import VNSnapCore

@Suite struct SWIMCodecTests {
    static let a = PeerID(name: "a")
    static let messages: [SWIMMessage] = [
        SWIMMessage(from: a, body: .ping(sequence: 1, target: PeerID(name: "b"))),
        SWIMMessage(from: a, body: .pingRequest(sequence: .max, target: PeerID(name: "b"), address: "[::1]:7947")),
        SWIMMessage(
            from: a,
            body: .ack(sequence: 3, observed: "203.0.113.7:40001"),
            gossip: [SWIMUpdate(state: SWIMFixtures.state("c", incarnation: 9, status: .suspect), origin: a)]
        ),
        SWIMMessage(from: a, body: .nack(sequence: 4)),
        SWIMMessage(
            from: a,
            body: .pushPull(
                isResponse: true,
                members: [SWIMFixtures.state("a"), SWIMFixtures.state("d", incarnation: 2, status: .left)]
            )
        ),
    ]

    @Test func test_encodeThenDecode_everyMessageType_shouldRoundTrip() throws {
        for message in Self.messages {
            let bytes = try SWIMCodec.encode(message)
            #expect(
                bytes.count == SWIMCodec.baseSize(of: message.body)
                    + message.gossip.reduce(0) { $0 + SWIMCodec.size(of: $1) }
            )
            #expect(try SWIMCodec.decode(bytes) == message)
        }
    }

    @Test func test_roles_andMetadata_shouldRoundTrip() throws {
        var state = SWIMFixtures.state("s")
        state.metadata = MemberMetadata(
            roles: [.store, .relay],
            tunnelAddress: "10.1.2.3:7946",
            storeCapacity: 1 << 40,
            version: "0.1.0",
            keyringGeneration: 7,
            keyringDigest: 0xdead_beef,
            nat: .symmetric,
            publicAddress: "203.0.113.7:40001",
            relays: [PeerID(name: "r1"), PeerID(name: "r2")],
            exchangeKey: (0..<32).map { UInt8($0 * 7) }
        )
        let message = SWIMMessage(from: state.id, body: .pushPull(isResponse: false, members: [state]))
        #expect(try SWIMCodec.decode(SWIMCodec.encode(message)) == message)
        #expect(try SWIMCodec.encode(message).count == SWIMCodec.baseSize(of: message.body))

        // More relays than a member may name is refused, not truncated.
        state.metadata.relays = (0...SWIMCodec.maximumRelays).map { PeerID(name: "r\($0)") }
        #expect(throws: WireFailure.oversized) {
            try SWIMCodec.encode(SWIMMessage(from: state.id, body: .pushPull(isResponse: false, members: [state])))
        }
        // So is an exchange key longer than an X25519 public key.
        state.metadata.relays = []
        state.metadata.exchangeKey = [UInt8](repeating: 9, count: SWIMCodec.maximumExchangeKey + 1)
        #expect(throws: WireFailure.oversized) {
            try SWIMCodec.encode(SWIMMessage(from: state.id, body: .pushPull(isResponse: false, members: [state])))
        }
    }

    @Test func test_decode_everyTruncation_shouldThrowTruncated() throws {
        for message in Self.messages {
            let bytes = try SWIMCodec.encode(message)
            for length in 0..<bytes.count {
                #expect(throws: SWIMCodec.Failure.self) { try SWIMCodec.decode(Array(bytes.prefix(length))) }
            }
            #expect(throws: SWIMCodec.Failure.trailingBytes) { try SWIMCodec.decode(bytes + [0]) }
        }
    }

    @Test func test_decode_badVersionOrType_shouldThrow() throws {
        var bytes = try SWIMCodec.encode(Self.messages[0])
        bytes[0] = 2  // the version before members gossiped exchange keys
        #expect(throws: SWIMCodec.Failure.badVersion) { try SWIMCodec.decode(bytes) }
        bytes[0] = 3
        bytes[1] = 99
        #expect(throws: SWIMCodec.Failure.malformed) { try SWIMCodec.decode(bytes) }
    }

    @Test func test_encode_tooLarge_shouldThrowOversized_notTruncate() {
        let many = (0..<40).map { SWIMUpdate(state: SWIMFixtures.state("member-\($0)"), origin: Self.a) }
        #expect(throws: SWIMCodec.Failure.oversized) {
            try SWIMCodec.encode(SWIMMessage(from: Self.a, body: .ack(sequence: 1), gossip: many))
        }
        let long = String(repeating: "x", count: 256)
        #expect(throws: SWIMCodec.Failure.oversized) {
            try SWIMCodec.encode(
                SWIMMessage(from: Self.a, body: .pingRequest(sequence: 1, target: Self.a, address: long))
            )
        }
        #expect(throws: SWIMCodec.Failure.oversized) {
            try SWIMCodec.decode([UInt8](repeating: 1, count: SWIMCodec.maximumSize + 1))
        }
    }

    @Test func test_decode_randomBytes_shouldNeverCrash() {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<20_000 {
            var bytes = (0..<Int(rng.next() % 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            if bytes.count > 2, rng.next() % 2 == 0 {
                bytes[0] = 1
                bytes[1] = UInt8(1 + rng.next() % 5)
            }
            _ = try? SWIMCodec.decode(bytes)
        }
    }

    /// Whatever the instance sends fits one datagram, even with many members and much news.
    @Test func test_instanceMessages_withLargeState_shouldAlwaysEncode() throws {
        var settings = SWIMSettings()
        settings.maxPiggyback = 50
        var swim = SWIMFixtures.instance(
            "a",
            knowing: (0..<300).map { "a-member-with-a-long-name-\($0)" },
            settings: settings
        )
        var directives = swim.onTick(now: .zero)
        directives += swim.onMessage(
            SWIMMessage(
                from: PeerID(name: "x"),
                body: .pushPull(isResponse: false, members: [SWIMFixtures.state("x")])
            ),
            from: "x:7947",
            now: .zero
        )
        #expect(directives.sends.count > 10)
        for (message, _) in directives.sends {
            #expect(throws: Never.self) { try SWIMCodec.encode(message) }
        }
    }
}
