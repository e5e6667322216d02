import Testing
import VNSnapCore

@Suite struct SWIMInstanceTests {
    let b = PeerID(name: "b")
    let c = PeerID(name: "c")
    let d = PeerID(name: "d")

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Probing

    @Test func test_onTick_withOneMember_shouldPingIt_andAckShouldEndProbe() {
        var swim = SWIMFixtures.instance("a", knowing: ["b"])
        let directives = swim.onTick(now: .zero)
        let sends = directives.sends.filter { if case .ping = $0.0.body { return true } else { return false } }
        #expect(sends.count == 1)
        guard case .ping(let sequence, let target) = sends.first?.0.body else {
            Issue.record("expected a ping, got \(directives)")
            return
        }
        #expect(target == self.b)
        #expect(sends.first?.1 == "b:7947")
        _ = swim.onMessage(SWIMMessage(from: self.b, body: .ack(sequence: sequence)), from: "b:7947", now: .ms(10))
        // No suspicion after the period.
        let later = swim.onTick(now: .ms(1000))
        #expect(later.changes.isEmpty)
        #expect(swim.state(of: self.b)?.status == .alive)
    }

    @Test func test_acksOfProbes_sayWhereThePingCameFrom_andTwoDomainsAgreeing_makeThePeerEndpointIndependent() {
        var swim = SWIMFixtures.instance("a", knowing: ["b", "c"])
        let incarnation = swim.me.incarnation
        var now = TestInstant.zero
        for _ in 0..<2 {
            let pings = swim.onTick(now: now).sends.compactMap { send -> (UInt32, String)? in
                guard case .ping(let sequence, _) = send.0.body else { return nil }
                return (sequence, send.1)
            }
            guard let (sequence, address) = pings.first else {
                Issue.record("no ping")
                return
            }
            let ack = SWIMMessage(
                from: PeerID(name: String(address.prefix(1))),
                body: .ack(sequence: sequence, observed: "203.0.113.7:40001")
            )
            _ = swim.onMessage(ack, from: address, now: now.advanced(by: .milliseconds(10)))
            now = now.advanced(by: .seconds(2))
        }
        #expect(swim.nat.type == .endpointIndependent)
        #expect(swim.nat.publicAddress?.description == "203.0.113.7:40001")
        #expect(swim.me.metadata.nat == .endpointIndependent, "gossiped in its metadata")
        #expect(swim.me.incarnation > incarnation, "under a higher incarnation, so the news spreads")
    }

    @Test func test_onPing_forMe_shouldAck_andForSomeoneElse_shouldIgnore() {
        var swim = SWIMFixtures.instance("a", knowing: ["b"])
        let ack = swim.onMessage(
            SWIMMessage(from: self.b, body: .ping(sequence: 7, target: PeerID(name: "a"))),
            from: "b:7947",
            now: .zero
        )
        #expect(
            ack.sends.map(\.0.body) == [.ack(sequence: 7, observed: "b:7947")],
            "it says where it saw the ping from"
        )
        #expect(ack.sends.first?.1 == "b:7947")
        let ignored = swim.onMessage(
            SWIMMessage(from: self.b, body: .ping(sequence: 8, target: self.c)),
            from: "b:7947",
            now: .zero
        )
        #expect(ignored.sends.isEmpty)
    }

    @Test func test_probeTimeout_shouldSendIndirectProbes_thenSuspectAtPeriodEnd() {
        var swim = SWIMFixtures.instance("a", knowing: ["b", "c", "d"])
        let first = swim.onTick(now: .zero)
        guard case .ping(let sequence, let target)? = first.sends.first?.0.body else {
            Issue.record("expected a ping")
            return
        }
        // Direct timeout (500 ms): ping requests to the two others.
        let indirect = swim.onTick(now: .ms(500))
        let requests = indirect.sends.filter {
            if case .pingRequest(sequence, target, _) = $0.0.body { return true }
            return false
        }
        #expect(requests.count == 2)
        #expect(Set(requests.map(\.1)).count == 2)
        #expect(!requests.map(\.1).contains(swim.state(of: target)!.address))
        // No ack by the end of the period: suspect.
        let end = swim.onTick(now: .ms(1000))
        #expect(end.changes.map(\.0.id) == [target])
        #expect(end.changes.first?.0.status == .suspect)
        #expect(end.changes.first?.1 == .alive)
    }

    @Test func test_indirectAck_shouldEndProbeWithoutSuspicion() {
        var swim = SWIMFixtures.instance("a", knowing: ["b", "c"])
        guard case .ping(let sequence, _)? = swim.onTick(now: .zero).sends.first?.0.body else { return }
        _ = swim.onTick(now: .ms(500))
        // The helper forwards the target's ack with our sequence number.
        _ = swim.onMessage(SWIMMessage(from: self.c, body: .ack(sequence: sequence)), from: "c:7947", now: .ms(700))
        #expect(swim.onTick(now: .ms(1000)).changes.isEmpty)
    }

    @Test func test_pingRequest_shouldRelay_forwardAck_andNackOnTimeout() {
        var swim = SWIMFixtures.instance("c", knowing: ["a", "b"])
        let relay = swim.onMessage(
            SWIMMessage(from: PeerID(name: "a"), body: .pingRequest(sequence: 42, target: self.b, address: "b:7947")),
            from: "a:7947",
            now: .zero
        )
        guard case .ping(let relaySequence, let target)? = relay.sends.first?.0.body else {
            Issue.record("expected a relayed ping, got \(relay)")
            return
        }
        #expect(target == self.b)
        #expect(relay.sends.first?.1 == "b:7947")
        let forwarded = swim.onMessage(
            SWIMMessage(from: self.b, body: .ack(sequence: relaySequence)),
            from: "b:7947",
            now: .ms(100)
        )
        #expect(forwarded.sends.map(\.0.body) == [.ack(sequence: 42)])
        #expect(forwarded.sends.first?.1 == "a:7947")

        // A second request that the target never answers: nack after the probe timeout.
        _ = swim.onMessage(
            SWIMMessage(from: PeerID(name: "a"), body: .pingRequest(sequence: 43, target: self.b, address: "b:7947")),
            from: "a:7947",
            now: .ms(1000)
        )
        let timeout = swim.onTick(now: .ms(1500))
        #expect(timeout.sends.contains { $0.0.body == .nack(sequence: 43) && $0.1 == "a:7947" })
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Local health (Lifeguard IV.A)

    @Test func test_localHealth_growsOnMissedNacks_andShrinksOnSuccess() {
        var swim = SWIMFixtures.instance("a", knowing: ["b", "c", "d"])
        guard case .ping(_, _)? = swim.onTick(now: .zero).sends.first?.0.body else { return }
        _ = swim.onTick(now: .ms(500))
        // Failed, and neither helper sent a nack: +2. The next probe starts in the same tick...
        let end = swim.onTick(now: .ms(1000))
        #expect(swim.localHealthScore == 2)
        let pings = end.sends.filter { if case .ping = $0.0.body { return true } else { return false } }
        guard case .ping(let sequence, let target)? = pings.last?.0.body, let pingAddress = pings.last?.1 else {
            Issue.record("expected the next probe at 1 s, got \(end)")
            return
        }
        // ...with its timeout scaled by (LHM + 1) = 3: no indirect probes at 1.5 s, only at 2.5 s.
        let atOneAndAHalf = swim.onTick(now: .ms(1500)).sends
        #expect(!atOneAndAHalf.contains { if case .pingRequest = $0.0.body { return true } else { return false } })
        _ = swim.onMessage(SWIMMessage(from: target, body: .ack(sequence: sequence)), from: pingAddress, now: .ms(1600))
        #expect(swim.localHealthScore == 1)
        // And the interval too: the probe after it is due 3 s after the last one started.
        func hasPing(_ directives: [TestDirective]) -> Bool {
            directives.sends.contains { if case .ping = $0.0.body { return true } else { return false } }
        }
        #expect(!hasPing(swim.onTick(now: .ms(3900))))
        #expect(hasPing(swim.onTick(now: .ms(4000))))
    }

    @Test func test_localHealth_whenAllNacksArrive_shouldNotGrow() {
        var swim = SWIMFixtures.instance("a", knowing: ["b", "c", "d"])
        guard case .ping(let sequence, _)? = swim.onTick(now: .zero).sends.first?.0.body else { return }
        let requests = swim.onTick(now: .ms(500)).sends
        for (_, address) in requests {
            _ = swim.onMessage(
                SWIMMessage(from: PeerID(name: String(address.prefix(1))), body: .nack(sequence: sequence)),
                from: address,
                now: .ms(900)
            )
        }
        _ = swim.onTick(now: .ms(1000))
        #expect(swim.localHealthScore == 0)
    }

    @Test func test_localHealth_withLifeguardOff_shouldStayZero() {
        var settings = SWIMSettings()
        settings.lifeguard = false
        var swim = SWIMFixtures.instance("a", knowing: ["b", "c"], settings: settings)
        _ = swim.onTick(now: .zero)
        let indirect = swim.onTick(now: .ms(500))
        _ = swim.onTick(now: .ms(1000))
        #expect(swim.localHealthScore == 0)
        // Plain SWIM relays send no nacks.
        _ = indirect
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Suspicion, refutation, death

    @Test func test_suspicionAboutMe_shouldRefuteWithHigherIncarnation() {
        var swim = SWIMFixtures.instance("a", knowing: ["b"])
        let claim = SWIMUpdate(state: SWIMFixtures.state("a", incarnation: 0, status: .suspect), origin: self.b)
        _ = swim.onMessage(
            SWIMMessage(from: self.b, body: .ack(sequence: 999), gossip: [claim]),
            from: "b:7947",
            now: .zero
        )
        #expect(swim.me.incarnation == 1)
        #expect(swim.me.status == .alive)
        // The refutation rides on the next message.
        let ping = swim.onTick(now: .zero).sends.first?.0
        #expect(
            ping?.gossip.contains {
                $0.state.id == PeerID(name: "a") && $0.state.incarnation == 1 && $0.state.status == .alive
            } == true
        )
    }

    @Test func test_suspect_whenRefutedByHigherIncarnation_shouldBeAliveAgain() {
        var swim = SWIMFixtures.instance("a", knowing: ["b", "c"])
        let suspect = SWIMUpdate(state: SWIMFixtures.state("b", status: .suspect), origin: self.c)
        #expect(
            swim.onMessage(
                SWIMMessage(from: self.c, body: .ack(sequence: 0), gossip: [suspect]),
                from: "c:7947",
                now: .zero
            ).changes.first?.0.status == .suspect
        )
        let alive = SWIMUpdate(state: SWIMFixtures.state("b", incarnation: 1), origin: self.b)
        let back = swim.onMessage(
            SWIMMessage(from: self.b, body: .ack(sequence: 0), gossip: [alive]),
            from: "b:7947",
            now: .ms(100)
        )
        #expect(back.changes.first?.0.status == .alive)
        #expect(back.changes.first?.1 == .suspect)
        // Its suspicion no longer runs: nothing dies later.
        #expect(swim.onTick(now: .ms(60_000)).changes.allSatisfy { $0.0.id != self.b || $0.0.status != .dead })
    }

    @Test func test_suspect_withoutRefutation_shouldBeDeadAfterTimeout() {
        var swim = SWIMFixtures.instance("a", knowing: ["b", "c"])
        let suspect = SWIMUpdate(state: SWIMFixtures.state("b", status: .suspect), origin: self.c)
        _ = swim.onMessage(
            SWIMMessage(from: self.c, body: .ack(sequence: 0), gossip: [suspect]),
            from: "c:7947",
            now: .zero
        )
        // n = 3: start = 4 · max(1, log10 3) · 1 s = 4 s with no confirmations.
        #expect(swim.state(of: self.b)?.status == .suspect)
        _ = swim.onTick(now: .ms(3900))
        #expect(swim.state(of: self.b)?.status == .suspect)
        let dead = swim.onTick(now: .ms(4000))
        #expect(dead.changes.contains { $0.0.id == self.b && $0.0.status == .dead && $0.1 == .suspect })
    }

    @Test func test_independentConfirmations_shouldShortenSuspicionToFloor() {
        let names = (0..<12).map { "m\($0)" }
        var swim = SWIMFixtures.instance("a", knowing: names)
        // n = 13: start = 4 · log10(13) s ≈ 4.46 s; floor = start / 6 ≈ 0.74 s; 2 confirmations reach the floor.
        let target = PeerID(name: "m0")
        for (i, origin) in ["m1", "m2", "m3", "m4"].enumerated() {
            let update = SWIMUpdate(state: SWIMFixtures.state("m0", status: .suspect), origin: PeerID(name: origin))
            _ = swim.onMessage(
                SWIMMessage(from: PeerID(name: origin), body: .ack(sequence: 0), gossip: [update]),
                from: "\(origin):7947",
                now: .ms(i)
            )
        }
        _ = swim.onTick(now: .ms(700))
        #expect(swim.state(of: target)?.status == .suspect)
        _ = swim.onTick(now: .ms(800))
        #expect(swim.state(of: target)?.status == .dead)
    }

    @Test func test_confirmations_withLifeguardOff_shouldNotShorten() {
        var settings = SWIMSettings()
        settings.lifeguard = false
        let names = (0..<12).map { "m\($0)" }
        var swim = SWIMFixtures.instance("a", knowing: names, settings: settings)
        for origin in ["m1", "m2", "m3", "m4"] {
            let update = SWIMUpdate(state: SWIMFixtures.state("m0", status: .suspect), origin: PeerID(name: origin))
            _ = swim.onMessage(
                SWIMMessage(from: PeerID(name: origin), body: .ack(sequence: 0), gossip: [update]),
                from: "\(origin):7947",
                now: .zero
            )
        }
        _ = swim.onTick(now: .ms(4000))
        #expect(swim.state(of: PeerID(name: "m0"))?.status == .suspect)
        _ = swim.onTick(now: .ms(4500))
        #expect(swim.state(of: PeerID(name: "m0"))?.status == .dead)
    }

    @Test func test_suspicionTimeout_formula() {
        let swim = SWIMFixtures.instance("a")
        let start = Duration.seconds(6)
        let floor = Duration.seconds(1)
        #expect(swim.suspicionTimeoutForTesting(start: start, floor: floor, confirmations: 0) == start)
        #expect(swim.suspicionTimeoutForTesting(start: start, floor: floor, confirmations: 3) == floor)
        #expect(swim.suspicionTimeoutForTesting(start: start, floor: floor, confirmations: 10) == floor)
        let one = swim.suspicionTimeoutForTesting(start: start, floor: floor, confirmations: 1)
        #expect(one < start && one > floor)
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Leave, gossip limits, merge rules

    @Test func test_leave_shouldAnnounceLeftWithHigherIncarnation_andOthersMarkLeftAtOnce() {
        var leaver = SWIMFixtures.instance("b", knowing: ["a", "c"])
        let goodbye = leaver.leave(now: .zero)
        #expect(leaver.me.status == .left)
        #expect(leaver.me.incarnation == 1)
        #expect(!goodbye.sends.isEmpty)
        var other = SWIMFixtures.instance("a", knowing: ["b", "c"])
        guard let (message, address) = goodbye.sends.first(where: { $0.1 == "a:7947" }) ?? goodbye.sends.first else {
            return
        }
        let changes = other.onMessage(message, from: address == "a:7947" ? "b:7947" : "b:7947", now: .ms(1)).changes
        #expect(changes.contains { $0.0.id == self.b && $0.0.status == .left })
        // A late, older "alive" cannot bring it back.
        let stale = SWIMUpdate(state: SWIMFixtures.state("b", incarnation: 1), origin: self.c)
        #expect(
            other.onMessage(
                SWIMMessage(from: self.c, body: .ack(sequence: 0), gossip: [stale]),
                from: "c:7947",
                now: .ms(2)
            ).changes.isEmpty
        )
        // The leaver does not refute suspicion any more.
        let claim = SWIMUpdate(state: SWIMFixtures.state("b", incarnation: 5, status: .dead), origin: self.c)
        _ = leaver.onMessage(
            SWIMMessage(from: self.c, body: .ack(sequence: 0), gossip: [claim]),
            from: "c:7947",
            now: .ms(3)
        )
        #expect(leaver.me.incarnation == 1)
    }

    @Test func test_gossip_eachUpdateIsPiggybackedAtMostRetransmitLimitTimes() {
        var settings = SWIMSettings()
        settings.retransmitMultiplier = 2
        var swim = SWIMFixtures.instance("a", knowing: ["b"], settings: settings)
        let news = SWIMUpdate(state: SWIMFixtures.state("z", incarnation: 3), origin: PeerID(name: "z"))
        _ = swim.onMessage(
            SWIMMessage(from: self.b, body: .ack(sequence: 0), gossip: [news]),
            from: "b:7947",
            now: .zero
        )
        // n = 3 (a, b, z): limit = 2 · ceil(log10 4) = 2.
        var carried = 0
        for i in 0..<10 {
            let sends = swim.onMessage(
                SWIMMessage(from: self.b, body: .ping(sequence: UInt32(i), target: PeerID(name: "a"))),
                from: "b:7947",
                now: .ms(i)
            ).sends
            carried += sends.filter { $0.0.gossip.contains { $0.state.id == PeerID(name: "z") } }.count
        }
        #expect(carried == 2)
    }

    @Test func test_pushPullMerge_remoteDeadBecomesSuspect_higherIncarnationWins_leftIsFinal() {
        var swim = SWIMFixtures.instance("a", knowing: ["b", "c", "d"])
        // A push/pull request starts with its sender's own state.
        let states = [
            SWIMFixtures.state("c", incarnation: 4),
            SWIMFixtures.state("b", incarnation: 0, status: .dead),
            SWIMFixtures.state("d", incarnation: 0, status: .left),
        ]
        let reply = swim.onMessage(
            SWIMMessage(from: self.c, body: .pushPull(isResponse: false, members: states)),
            from: "c:7947",
            now: .zero
        )
        #expect(swim.state(of: self.b)?.status == .suspect)
        #expect(swim.state(of: self.c)?.incarnation == 4)
        #expect(swim.state(of: self.d)?.status == .left)
        // A request is answered with our whole state.
        let answered = reply.sends.flatMap { message, _ -> [MemberState] in
            if case .pushPull(true, let members) = message.body { return members }
            return []
        }
        #expect(Set(answered.map(\.id)) == Set([PeerID(name: "a"), self.b, self.c, self.d]))
        // An older state never overrides a newer one.
        _ = swim.onMessage(
            SWIMMessage(
                from: self.b,
                body: .pushPull(isResponse: true, members: [SWIMFixtures.state("c", incarnation: 2)])
            ),
            from: "b:7947",
            now: .ms(1)
        )
        #expect(swim.state(of: self.c)?.incarnation == 4)
    }

    @Test func test_join_unansweredSeeds_shouldBeRetriedWithBackoff_untilOneAnswers() {
        var swim = TestSWIM(me: SWIMFixtures.state("a"), rng: SplitMix64(seed: 3), now: .zero)
        let first = swim.join(seeds: ["s1:7947", "s2:7947"], now: .zero)
        #expect(Set(first.sends.map(\.1)) == ["s1:7947", "s2:7947"])
        #expect(swim.isWaitingForSeeds)
        var retries: [Int] = []
        var t = 0
        while t <= 8000 {
            if !swim.onTick(now: .ms(t)).sends.filter({ $0.1 == "s1:7947" }).isEmpty { retries.append(t) }
            t += 100
        }
        #expect(retries == [1000, 3000, 7000])
        _ = swim.onMessage(
            SWIMMessage(
                from: PeerID(name: "s1"),
                body: .pushPull(isResponse: true, members: [SWIMFixtures.state("s1")])
            ),
            from: "s1:7947",
            now: .ms(8100)
        )
        #expect(!swim.isWaitingForSeeds)
        #expect(swim.hasJoined)
    }

    @Test func test_onTick_alwaysEndsWithScheduleTick_neverInThePast() {
        var swim = SWIMFixtures.instance("a", knowing: ["b"])
        for t in stride(from: 0, to: 5000, by: 137) {
            let directives = swim.onTick(now: .ms(t))
            guard let next = directives.nextTick else {
                Issue.record("no scheduleTick at \(t)")
                return
            }
            #expect(next >= .ms(t))
            #expect(next <= .ms(t + 1000))
        }
    }
}
