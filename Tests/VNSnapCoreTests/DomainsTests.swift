import Testing
import VNSnapCore

/// Across domains (issue 15): a peer's NAT classified from what observers saw, relays chosen with spread, cap and
/// little churn, and the relayed → punching → direct path with hysteresis.
@Suite struct DomainsTests {
    static let local = HostPort(host: "10.0.1.5", port: 7947)

    @Test func test_natType_fromObservations_publicBlockedIndependentSymmetricOrUnknown() {
        var nat = NATClassifier(local: Self.local)
        #expect(nat.type == .unknown, "nothing observed yet")
        nat.observed(Self.local, by: "198.51.100.1")
        #expect(nat.type == .unknown, "seen at its own address by one observer, nothing unsolicited yet")
        nat.observed(Self.local, by: "192.0.2.9")
        #expect(nat.type == .inboundBlocked, "two domains saw it, and still nothing arrived unasked")
        nat.inboundUnsolicited()
        #expect(nat.type == .public)

        var keeping = NATClassifier(local: Self.local)
        keeping.observed(HostPort(host: "203.0.113.7", port: 40_001), by: "198.51.100.1")
        #expect(keeping.type == .unknown, "one observer cannot tell a keeping NAT from a symmetric one")
        keeping.observed(HostPort(host: "203.0.113.7", port: 40_001), by: "192.0.2.9")
        #expect(keeping.type == .endpointIndependent)
        #expect(keeping.publicAddress == HostPort(host: "203.0.113.7", port: 40_001))

        var symmetric = NATClassifier(local: Self.local)
        symmetric.observed(HostPort(host: "203.0.113.7", port: 40_001), by: "198.51.100.1")
        symmetric.observed(HostPort(host: "203.0.113.7", port: 51_377), by: "192.0.2.9")
        #expect(symmetric.type == .symmetric)
        #expect(symmetric.publicAddress == nil)
        // An observer's later report replaces its earlier one.
        symmetric.observed(HostPort(host: "203.0.113.7", port: 40_001), by: "192.0.2.9")
        #expect(symmetric.type == .endpointIndependent)
    }

    @Test func test_punchable_onlyWhenNeitherSideIsSymmetricOrOneIsPublic() {
        #expect(NATType.punchable(.endpointIndependent, .endpointIndependent))
        #expect(NATType.punchable(.endpointIndependent, .inboundBlocked))
        #expect(NATType.punchable(.symmetric, .public))
        #expect(!NATType.punchable(.symmetric, .endpointIndependent))
        #expect(!NATType.punchable(.symmetric, .symmetric))
        #expect(!NATType.punchable(.unknown, .endpointIndependent))
    }

    static func relays(_ count: Int, domains: Int = 3, load: Int = 0) -> [RelayChoice.Relay] {
        (0..<count).map { RelayChoice.Relay(id: PeerID(name: "r\($0)"), domain: "d\($0 % domains)", load: load) }
    }

    @Test func test_relayChoice_spreadsOverDomains_respectsTheCap_andDiffersBetweenPeers() {
        let relays = Self.relays(6)
        let mine = RelayChoice.choose(for: PeerID(name: "h1"), from: relays, k: 3)
        #expect(mine.count == 3)
        let domains = Set(mine.compactMap { id in relays.first { $0.id == id }?.domain })
        #expect(domains.count >= 2, "at least two domains: \(domains)")
        // Many peers: no relay is picked by everyone.
        var uses: [PeerID: Int] = [:]
        for index in 0..<60 {
            for relay in RelayChoice.choose(for: PeerID(name: "peer\(index)"), from: relays, k: 3) {
                uses[relay, default: 0] += 1
            }
        }
        #expect(uses.values.allSatisfy { $0 < 60 }, "\(uses)")
        #expect(uses.count == 6, "every relay is used by someone")
        // Relays at their cap are passed over while others are free.
        var full = relays
        for index in 0..<3 { full[index].load = 32 }
        let capped = RelayChoice.choose(for: PeerID(name: "h1"), from: full, k: 3, cap: 32)
        #expect(Set(capped) == Set(full[3...].map(\.id)))
    }

    @Test func test_relayChoice_whenARelayGoes_onlyItIsReplaced() {
        let relays = Self.relays(6)
        let before = RelayChoice.choose(for: PeerID(name: "h1"), from: relays, k: 3)
        let gone = before[1]
        let after = RelayChoice.choose(
            for: PeerID(name: "h1"),
            from: relays.filter { $0.id != gone },
            k: 3,
            current: before
        )
        #expect(after.count == 3)
        #expect(Set(after).intersection(before) == Set(before).subtracting([gone]), "the others are kept")
        #expect(!after.contains(gone))
        #expect(RelayChoice.choose(for: PeerID(name: "r1"), from: relays, k: 3).contains(PeerID(name: "r1")) == false)
    }

    typealias Path = PathState<TestInstant>

    @Test func test_path_punchesWhenAllowed_goesDirectOnlyAfterProofsBothWays() {
        var path = Path(punchable: true, now: .zero)
        #expect(path.tick(now: .zero) == .punch(attempt: 1))
        #expect(path.roundTrip(outbound: true, now: .ms(100)) == nil)
        #expect(path.roundTrip(outbound: true, now: .ms(200)) == nil, "one way only so far")
        #expect(path.roundTrip(outbound: false, now: .ms(300)) == nil)
        #expect(path.roundTrip(outbound: false, now: .ms(400)) == .useDirect)
        #expect(path.path == .direct)
        #expect(path.tick(now: .ms(10_000)) == nil)
    }

    @Test func test_path_betweenSymmetricNATs_staysRelayed() {
        var path = Path(punchable: false, now: .zero)
        #expect(path.tick(now: .ms(60_000)) == nil)
        #expect(path.path == .relayed)
    }

    @Test func test_path_unansweredPunches_giveUpAfterTheAttempts_andTryAgainAfterTheHoldDown() {
        var path = Path(punchable: true, now: .zero)
        #expect(path.tick(now: .zero) == .punch(attempt: 1))
        #expect(path.tick(now: .ms(1_000)) == nil, "not yet due")
        #expect(path.tick(now: .ms(2_000)) == .punch(attempt: 2))
        #expect(path.tick(now: .ms(4_000)) == .punch(attempt: 3))
        #expect(path.tick(now: .ms(6_000)) == nil)
        #expect(path.path == .relayed)
        #expect(path.tick(now: .ms(35_000)) == nil, "held down for 30 s")
        #expect(path.tick(now: .ms(36_000)) == .punch(attempt: 1))
    }

    @Test func test_path_lossesOnTheDirectPath_fallBackToTheRelay_withAHoldDownThatDoublesPerFlap() {
        var path = Path(punchable: true, now: .zero)
        func goDirect(at ms: Int) {
            #expect(path.tick(now: .ms(ms)) == .punch(attempt: 1))
            for outbound in [true, true, false, false] { _ = path.roundTrip(outbound: outbound, now: .ms(ms + 1)) }
            #expect(path.path == .direct)
        }
        goDirect(at: 0)
        #expect(path.lost(now: .ms(1_000)) == nil)
        #expect(path.lost(now: .ms(2_000)) == nil)
        _ = path.roundTrip(outbound: true, now: .ms(2_500))
        #expect(path.lost(now: .ms(3_000)) == nil, "an answer in between resets the count")
        // Their probes still arriving prove nothing about the way out (a one-way path must not stay in use).
        _ = path.roundTrip(outbound: false, now: .ms(3_500))
        #expect(path.lost(now: .ms(4_000)) == nil)
        #expect(path.lost(now: .ms(5_000)) == .useRelay)
        #expect(path.flaps == 1)
        #expect(path.tick(now: .ms(34_000)) == nil, "held down 30 s")
        goDirect(at: 35_000)
        for ms in [36_000, 37_000, 38_000] { _ = path.lost(now: .ms(ms)) }
        #expect(path.path == .relayed)
        #expect(path.tick(now: .ms(97_000)) == nil, "the second hold-down is 60 s")
        #expect(path.tick(now: .ms(98_000)) == .punch(attempt: 1))
    }
}

/// A relay's sessions (issue 15): forwarding only to peers that keep a session, at the address their keepalives
/// come from, within a per-pair rate cap, counted per peer.
@Suite struct RelayTableTests {
    typealias Table = RelayTable<String, SimInstant>
    let a = PeerID(name: "a")
    let b = PeerID(name: "b")
    let c = PeerID(name: "c")

    @Test func test_forward_toAPeerWithASession_goesWhereItsKeepalivesComeFrom_elseRefused() {
        var table = Table()
        let t0 = SimInstant.zero
        #expect(table.forward(from: a, to: b, bytes: 100, now: t0) == .failure(.noSession))
        table.hello(from: b, at: "203.0.113.7:40001", now: t0)
        #expect(table.forward(from: a, to: b, bytes: 100, now: t0) == .success("203.0.113.7:40001"))
        // Its NAT mapped it anew (a flushed router): the next keepalive moves the session.
        table.hello(from: b, at: "203.0.113.7:40999", now: t0.advanced(by: .seconds(5)))
        #expect(
            table.forward(from: a, to: b, bytes: 100, now: t0.advanced(by: .seconds(5)))
                == .success("203.0.113.7:40999")
        )
        #expect(table.served[b]?.datagrams == 2 && table.served[b]?.bytes == 200 && table.served[b]?.refused == 1)
        #expect(table.served[a]?.datagrams == 2, "counted for the sender too")
    }

    @Test func test_session_withoutKeepalives_lapsesAfterTheTimeout_andExpireForgetsIt() {
        var table = Table()
        table.hello(from: b, at: "b", now: .zero)
        #expect(table.sessionPeers(now: .zero.advanced(by: .seconds(30))) == [b])
        #expect(table.forward(from: a, to: b, bytes: 1, now: .zero.advanced(by: .seconds(31))) == .failure(.noSession))
        table.expire(now: .zero.advanced(by: .seconds(31)))
        #expect(table.sessionPeers(now: .zero.advanced(by: .seconds(31))).isEmpty)
        #expect(table.served.isEmpty)
    }

    @Test func test_ratePerPair_capsOneSender_notTheOthers_andRefillsWithTime() {
        var settings = Table.Settings()
        settings.bytesPerSecond = 1000
        settings.burst = 1000
        var table = Table(settings: settings)
        table.hello(from: b, at: "b", now: .zero)
        #expect(table.forward(from: a, to: b, bytes: 800, now: .zero) == .success("b"))
        #expect(table.forward(from: a, to: b, bytes: 800, now: .zero) == .failure(.rateCapped))
        #expect(table.forward(from: c, to: b, bytes: 800, now: .zero) == .success("b"), "another pair has its own")
        #expect(table.forward(from: a, to: b, bytes: 800, now: .zero.advanced(by: .milliseconds(700))) == .success("b"))
    }
}

/// Membership through relays (issue 15): a ping that came through a relay is answered without an observed address
/// and without a dial-back, and says nothing about this peer's NAT.
@Suite struct RelayedMembershipTests {
    /// `a` knowing `b` from a datagram that came through a relay.
    static func swim() -> TestSWIM {
        var swim = TestSWIM(me: SWIMFixtures.state("a"), rng: SplitMix64(seed: 1), now: .zero)
        let b = SWIMFixtures.state("b")
        _ = swim.onMessage(
            SWIMMessage(from: b.id, body: .pushPull(isResponse: true, members: [b])),
            from: "b:7947",
            relayed: true,
            now: .zero
        )
        return swim
    }

    @Test func test_pingThroughARelay_isAnsweredToTheMemberAddress_withoutObservedAddressOrDialBack() {
        var swim = Self.swim()
        let directives = swim.onMessage(
            SWIMMessage(from: PeerID(name: "b"), body: .ping(sequence: 5, target: PeerID(name: "a"))),
            from: "b:7947",
            relayed: true,
            now: .zero
        )
        #expect(directives.sends.map(\.1) == ["b:7947"])
        #expect(directives.sends.first?.0.body == .ack(sequence: 5, observed: ""))
        #expect(!directives.contains { if case .dialBack = $0 { return true } else { return false } })
        #expect(!swim.nat.unsolicitedInbound, "a relayed datagram is no sign that the NAT lets strangers in")

        // Straight from an address it never sent to: unsolicited, and the ack says where it came from.
        let direct = swim.onMessage(
            SWIMMessage(from: PeerID(name: "b"), body: .ping(sequence: 6, target: PeerID(name: "a"))),
            from: "198.51.100.4:7947",
            now: .zero
        )
        #expect(direct.sends.first?.0.body == .ack(sequence: 6, observed: "198.51.100.4:7947"))
        #expect(swim.nat.unsolicitedInbound)
    }

    @Test func test_noteSent_makesTheShellsOtherPathsSolicited() {
        var swim = Self.swim()
        swim.noteSent(to: "203.0.113.7:40001")
        _ = swim.onMessage(SWIMMessage(from: PeerID(name: "b"), body: .gossip), from: "203.0.113.7:40001", now: .zero)
        #expect(!swim.nat.unsolicitedInbound)
    }
}
