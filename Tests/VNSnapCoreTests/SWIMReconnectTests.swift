import Testing
import VNSnapCore

/// Healing after a partition and metadata news: both sides of a split hold the other dead until a reconnect
/// exchange makes each refute; metadata changes travel under a higher incarnation.
@Suite struct SWIMReconnectTests {
    let a = PeerID(name: "a")
    let b = PeerID(name: "b")

    /// Tells `swim` (gossip asserted by a third peer, `c`) that `subject` is dead at incarnation 0.
    func declareDead(_ subject: String, in swim: inout TestSWIM, now: TestInstant) {
        _ = swim.onMessage(
            SWIMMessage(
                from: PeerID(name: "c"),
                body: .gossip,
                gossip: [SWIMUpdate(state: SWIMFixtures.state(subject, status: .dead), origin: PeerID(name: "c"))]
            ),
            from: "c:7947",
            now: now
        )
    }

    @Test func test_reconnect_afterPartition_bothSidesRefuteAndSeeEachOtherAlive() {
        // Each side knows only the other, so the reconnect has one dead member to pick.
        var a = SWIMFixtures.instance("a", knowing: ["b"], seed: 11)
        var b = SWIMFixtures.instance("b", knowing: ["a"], seed: 12)
        self.declareDead("b", in: &a, now: .ms(1))
        self.declareDead("a", in: &b, now: .ms(1))
        #expect(a.state(of: self.b)?.status == .dead)
        #expect(b.state(of: self.a)?.status == .dead)

        // Ten seconds on, `a` reaches out to its dead member with its whole state.
        var requests: [SWIMMessage] = []
        for t in stride(from: 100, through: 10_100, by: 100) {
            requests += a.onTick(now: .ms(t)).sends.filter { $0.1 == "b:7947" }.map(\.0)
        }
        let pushPull = requests.filter {
            if case .pushPull(false, _) = $0.body { return true }
            return false
        }
        #expect(!pushPull.isEmpty)

        // `b` learns it was declared dead, refutes, and answers with its newer self.
        var answers: [SWIMMessage] = []
        for message in pushPull {
            answers += b.onMessage(message, from: "a:7947", now: .ms(10_200)).sends.map(\.0)
        }
        #expect(b.state(of: self.b)?.incarnation == 1)
        #expect(b.counters.refutations == 1)
        for answer in answers { _ = a.onMessage(answer, from: "b:7947", now: .ms(10_300)) }
        #expect(a.state(of: self.b)?.status == .alive)
        // The answer told `a` it is dead in `b`'s view: `a` refutes too, and its next message carries it.
        #expect(a.state(of: self.a)?.incarnation == 1)
        var carried = false
        for t in stride(from: 10_400, through: 14_000, by: 100) {
            for (message, address) in a.onTick(now: .ms(t)).sends where address == "b:7947" {
                _ = b.onMessage(message, from: "a:7947", now: .ms(t))
                carried = carried || message.gossip.contains { $0.state.id == self.a && $0.state.incarnation == 1 }
            }
        }
        #expect(carried)
        #expect(b.state(of: self.a)?.status == .alive)
    }

    @Test func test_afterJoining_seedsThatAreNotAliveMembers_areStillTriedEvery30s() {
        var swim = TestSWIM(me: SWIMFixtures.state("a"), rng: SplitMix64(seed: 9), now: .zero)
        _ = swim.join(seeds: ["s1:7947", "s2:7947"], now: .zero)
        _ = swim.onMessage(
            SWIMMessage(
                from: PeerID(name: "s1"),
                body: .pushPull(isResponse: true, members: [SWIMFixtures.state("s1")])
            ),
            from: "s1:7947",
            now: .ms(10)
        )
        #expect(!swim.isWaitingForSeeds)
        var triedS2: [Int] = []
        for t in stride(from: 100, through: 65_000, by: 100) {
            for (message, address) in swim.onTick(now: .ms(t)).sends {
                guard case .pushPull(false, _) = message.body else { continue }
                if address == "s2:7947" { triedS2.append(t) }
            }
        }
        #expect(triedS2.first.map { $0 >= 30_000 && $0 <= 31_000 } == true, "\(triedS2)")
        #expect(triedS2.count >= 2, "\(triedS2)")
    }

    @Test func test_updateMetadata_raisesIncarnation_andOthersReportTheChange() {
        var a = SWIMFixtures.instance("a", knowing: ["b"])
        var b = SWIMFixtures.instance("b", knowing: ["a"])
        var metadata = SWIMFixtures.metadata
        metadata.keyringGeneration = 2
        metadata.tunnelAddress = "10.0.0.9:7946"
        a.updateMetadata(metadata)
        #expect(a.me.incarnation == 1)
        a.updateMetadata(metadata)
        #expect(a.me.incarnation == 1, "the same metadata again is no news")

        var changes: [(MemberState, MemberStatus?)] = []
        for t in stride(from: 0, through: 3000, by: 100) {
            for (message, address) in a.onTick(now: .ms(t)).sends where address == "b:7947" {
                changes += b.onMessage(message, from: "a:7947", now: .ms(t)).changes
            }
        }
        #expect(b.state(of: self.a)?.metadata.keyringGeneration == 2)
        #expect(changes.contains { $0.0.metadata.tunnelAddress == "10.0.0.9:7946" && $0.1 == .alive })
    }
}

/// Lifeguard's confirmations from this peer's own probes.
@Suite struct SWIMConfirmationTests {
    @Test func test_failedProbeOfAMemberAlreadySuspect_countsAsConfirmation_isGossiped_andShortensTheSuspicion() {
        let a = PeerID(name: "a")
        let b = PeerID(name: "b")
        var swim = SWIMFixtures.instance("a", knowing: ["b", "d"], seed: 4)
        // c (unknown here) suspects b: a's suspicion starts at 4 s (n = 3: 4 · max(1, log10 3) intervals).
        _ = swim.onMessage(
            SWIMMessage(
                from: PeerID(name: "c"),
                body: .gossip,
                gossip: [SWIMUpdate(state: SWIMFixtures.state("b", status: .suspect), origin: PeerID(name: "c"))]
            ),
            from: "c:7947",
            now: .zero
        )
        var confirmationGossiped = false
        var deadAt: Int?
        for t in stride(from: 0, through: 4000, by: 50) {
            for (message, address) in swim.onTick(now: .ms(t)).sends where address == "d:7947" {
                // d is healthy: it answers every ping, and what a tells it shows what a gossips.
                confirmationGossiped =
                    confirmationGossiped
                    || message.gossip.contains { $0.state.id == b && $0.state.status == .suspect && $0.origin == a }
                if case .ping(let sequence, _) = message.body {
                    _ = swim.onMessage(
                        SWIMMessage(from: PeerID(name: "d"), body: .ack(sequence: sequence)),
                        from: "d:7947",
                        now: .ms(t)
                    )
                }
            }
            if deadAt == nil, swim.state(of: b)?.status == .dead { deadAt = t }
        }
        #expect(confirmationGossiped, "a's own failed probe of b was not passed on as a confirmation")
        #expect(deadAt.map { $0 < 4000 } == true, "the suspicion was not shortened: b died at \(deadAt ?? -1) ms")
    }
}

/// What tools/chaos saw (seed 1, round 6): two of five members cut off from the other three for a few seconds, then
/// the network healed; 120 s later the two still saw only themselves alive.
@Suite struct SWIMPartitionHealSimulationTests {
    @Test(arguments: [1, 2, 3, 4, 6, 10])
    func test_twoOfFiveCutOffForSeconds_thenHealed_everyMemberSeesAllAliveWithin60s(seconds: Int) {
        for seed in UInt64(1)...5 {
            var configuration = SWIMSimulation.Configuration(members: 5)
            configuration.seed = seed
            let simulation = SWIMSimulation(configuration)
            simulation.run(until: SimInstant(nanoseconds: 5_000_000_000))
            simulation.partition([1, 4])
            simulation.run(until: SimInstant(nanoseconds: Int64(5 + seconds) * 1_000_000_000))
            simulation.heal()
            simulation.run(until: SimInstant(nanoseconds: Int64(65 + seconds) * 1_000_000_000))
            let views = (0..<5).map { observer in
                (0..<5).filter { simulation.status(of: $0, seenBy: observer)?.isActive ?? true }
            }
            #expect(views.allSatisfy { $0.count == 5 }, "seed \(seed), cut off \(seconds) s: \(views)")
        }
    }
}
