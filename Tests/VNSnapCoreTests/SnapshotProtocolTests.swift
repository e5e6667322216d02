import Testing
import VNSnapCore

typealias TestInitiator = SnapshotInitiator<TestInstant>
typealias TestParticipant = SnapshotParticipant<TestInstant>

enum SnapshotFixtures {
    static let initiator = PeerID(name: "h0")
    static let peers = [PeerID(name: "h1"), PeerID(name: "h2")]
    static let key = SnapshotKey(id: 7, violin: "pipeline", epoch: 1, term: 3)
    static let plan = SnapshotPlan(vms: [peers[0]: ["source", "sink"], peers[1]: ["relay"]], mode: .cow)

    static func report(_ vm: String, at: UInt64 = 1) -> VMCutReport {
        VMCutReport(vm: vm, cutAtNanoseconds: at, downtimeNanoseconds: 5_000_000, triggered: false)
    }

    static func message(_ body: SnapshotMessage.Body, from: PeerID) -> SnapshotMessage {
        SnapshotMessage(key: key, from: from, body: body)
    }
}

extension Array where Element == TestInitiator.Directive {
    var sent: [(SnapshotMessage.Body, PeerID)] {
        self.compactMap {
            if case .send(let message, let peer) = $0 { return (message.body, peer) }
            return nil
        }
    }
}

/// The initiator alone, fed answers by hand: every phase, retransmits, timeouts, abort.
@Suite struct SnapshotInitiatorTests {
    typealias F = SnapshotFixtures

    func started() -> TestInitiator {
        var initiator = TestInitiator(key: F.key, me: F.initiator, plan: F.plan, now: .zero)
        let directives = initiator.start(now: .zero)
        #expect(directives.sent.map(\.1) == F.peers.sorted())
        return initiator
    }

    @Test func test_allPhases_answeredInOrder_commitOnlyAfterManifest() {
        var initiator = self.started()
        _ = initiator.onMessage(F.message(.prepared(ok: true, reason: nil), from: F.peers[0]), now: .ms(1))
        #expect(initiator.phase == .preparing)
        let cut = initiator.onMessage(F.message(.prepared(ok: true, reason: nil), from: F.peers[1]), now: .ms(2))
        #expect(initiator.phase == .cutting)
        #expect(cut.sent.filter { if case .cut = $0.0 { true } else { false } }.count == 2)
        _ = initiator.onMessage(
            F.message(.cutDone([F.report("sink"), F.report("source")]), from: F.peers[0]),
            now: .ms(3)
        )
        // Durable may arrive before the other participant's cut report.
        _ = initiator.onMessage(F.message(.durable([]), from: F.peers[0]), now: .ms(4))
        _ = initiator.onMessage(F.message(.cutDone([F.report("relay")]), from: F.peers[1]), now: .ms(5))
        #expect(initiator.phase == .streaming)
        let manifest = initiator.onMessage(F.message(.durable([]), from: F.peers[1]), now: .ms(6))
        #expect(initiator.phase == .writingManifest)
        #expect(
            manifest.contains(
                .writeManifest(
                    cuts: [F.peers[0]: [F.report("sink"), F.report("source")], F.peers[1]: [F.report("relay")]],
                    reports: [F.peers[0]: [], F.peers[1]: []]
                )
            )
        )
        // Not committed until the manifest is written: an abort now still wins.
        let commit = initiator.manifestWritten([], now: .ms(7))
        #expect(commit.sent.filter { $0.0 == .commit([]) }.count == 2)
        _ = initiator.onMessage(F.message(.committed, from: F.peers[0]), now: .ms(8))
        let done = initiator.onMessage(F.message(.committed, from: F.peers[1]), now: .ms(9))
        #expect(done.contains(.finished(.committed)))
        // After the commit point an abort changes nothing.
        #expect(initiator.abort(SnapshotAbortReason("late"), now: .ms(10)).sent.isEmpty)
        #expect(initiator.phase == .committed)
    }

    @Test func test_unansweredPrepare_isResentToTheSilentOnly_thenAbortsNamingThem() {
        var initiator = self.started()
        _ = initiator.onMessage(F.message(.prepared(ok: true, reason: nil), from: F.peers[0]), now: .ms(1))
        let resend = initiator.onTick(now: .ms(200))
        #expect(resend.sent.map(\.1) == [F.peers[1]])
        var t = 200
        var aborted: [TestInitiator.Directive] = []
        while initiator.phase == .preparing, t < 20_000 {
            t += 200
            aborted = initiator.onTick(now: .ms(t))
        }
        #expect(initiator.phase == .aborting)
        #expect(t == 10_000, "prepare timeout is 10 s")
        #expect(initiator.abortReason?.message.contains(F.peers[1].description) == true)
        #expect(aborted.sent.filter { if case .abort = $0.0 { true } else { false } }.count == 2)
        _ = initiator.onMessage(F.message(.aborted, from: F.peers[0]), now: .ms(t + 1))
        let done = initiator.onMessage(F.message(.aborted, from: F.peers[1]), now: .ms(t + 2))
        #expect(done.contains(.finished(.aborted(initiator.abortReason!))))
    }

    @Test func test_participantThatCannotPrepare_abortsEverywhereWithItsReason() {
        var initiator = self.started()
        let directives = initiator.onMessage(
            F.message(.prepared(ok: false, reason: "disk full"), from: F.peers[1]),
            now: .ms(1)
        )
        #expect(initiator.phase == .aborting)
        #expect(initiator.abortReason?.message.contains("disk full") == true)
        #expect(directives.sent.count == 2)
    }

    @Test func test_otherSnapshotsAndStrangers_areIgnored() {
        var initiator = self.started()
        var otherKey = F.key
        otherKey.term = 2
        _ = initiator.onMessage(
            SnapshotMessage(key: otherKey, from: F.peers[0], body: .prepared(ok: true, reason: nil)),
            now: .ms(1)
        )
        _ = initiator.onMessage(
            F.message(.prepared(ok: true, reason: nil), from: PeerID(name: "stranger")),
            now: .ms(1)
        )
        _ = initiator.onMessage(F.message(.prepared(ok: true, reason: nil), from: F.peers[1]), now: .ms(2))
        #expect(initiator.phase == .preparing, "only h2 of h1, h2 has answered")
    }

    @Test func test_participantStillSendingDurableAfterCommit_isToldAgain() {
        var initiator = self.started()
        for peer in F.peers {
            _ = initiator.onMessage(F.message(.prepared(ok: true, reason: nil), from: peer), now: .ms(1))
        }
        for peer in F.peers { _ = initiator.onMessage(F.message(.cutDone([]), from: peer), now: .ms(2)) }
        for peer in F.peers { _ = initiator.onMessage(F.message(.durable([]), from: peer), now: .ms(3)) }
        _ = initiator.manifestWritten([], now: .ms(4))
        let again = initiator.onMessage(F.message(.durable([]), from: F.peers[0]), now: .ms(5))
        #expect(again.sent.map(\.0) == [.commit([])])
    }
}

extension SnapshotInitiatorTests {
    @Test func test_abortWhileTheManifestIsWritten_waitsForTheWrite_andAFailedWriteAborts() {
        typealias F = SnapshotFixtures
        var initiator = self.started()
        for peer in F.peers {
            _ = initiator.onMessage(F.message(.prepared(ok: true, reason: nil), from: peer), now: .ms(1))
        }
        for peer in F.peers { _ = initiator.onMessage(F.message(.cutDone([]), from: peer), now: .ms(2)) }
        for peer in F.peers { _ = initiator.onMessage(F.message(.durable([]), from: peer), now: .ms(3)) }
        #expect(initiator.abort(SnapshotAbortReason("operator"), now: .ms(4)).sent.isEmpty)
        #expect(initiator.phase == .writingManifest)
        let aborted = initiator.manifestFailed("disk full", now: .ms(5))
        #expect(initiator.phase == .aborting)
        #expect(aborted.sent.count == 2)
    }

    @Test func test_participantReportingFailure_abortsEverywhereWithItsReason() {
        typealias F = SnapshotFixtures
        var initiator = self.started()
        for peer in F.peers {
            _ = initiator.onMessage(F.message(.prepared(ok: true, reason: nil), from: peer), now: .ms(1))
        }
        _ = initiator.onMessage(F.message(.failed("QMP stop failed"), from: F.peers[1]), now: .ms(2))
        #expect(initiator.phase == .aborting)
        #expect(initiator.abortReason?.message.contains("QMP stop failed") == true)
    }

    @Test func test_streaming_markerResentToTheNotYetDurable_aRestartedParticipantsFailureAborts() {
        var initiator = self.started()
        for peer in F.peers {
            _ = initiator.onMessage(F.message(.prepared(ok: true, reason: nil), from: peer), now: .ms(1))
        }
        _ = initiator.onMessage(
            F.message(.cutDone([F.report("sink"), F.report("source")]), from: F.peers[0]),
            now: .ms(2)
        )
        _ = initiator.onMessage(F.message(.cutDone([F.report("relay")]), from: F.peers[1]), now: .ms(3))
        _ = initiator.onMessage(F.message(.durable([]), from: F.peers[0]), now: .ms(4))
        #expect(initiator.phase == .streaming)
        // The machine asks to be ticked for it well before the stream's deadline (the shell ticks only then).
        #expect(initiator.nextDeadline <= .ms(1_000))
        // Only h2 is not durable yet: the marker goes to it alone, again and again.
        let resent = initiator.onTick(now: .ms(1_000)).sent
        #expect(resent.count == 1 && resent.first?.1 == F.peers[1])
        #expect(resent.contains { if case .cut = $0.0 { true } else { false } })
        // h2 restarted since it prepared: it answers the marker with a failure, and the snapshot aborts at once.
        _ = initiator.onMessage(
            F.message(.failed("h2 has no record of snapshot 7"), from: F.peers[1]),
            now: .ms(2_000)
        )
        #expect(initiator.phase == .aborting)
        #expect(initiator.abortReason?.message.contains("no record") == true)
    }
}

extension SnapshotParticipantTests {
    @Test func test_everyVMCutByTriggersAndDurableBeforeTheMarker_sendsCutDoneThenDurable() {
        typealias F = SnapshotFixtures
        var participant = self.prepared(F.peers[1])
        _ = participant.vmTriggered("relay", now: .ms(2))
        _ = participant.vmCut(F.report("relay"), now: .ms(3))
        #expect(participant.imagesDurable(now: .ms(4)).isEmpty, "not before the marker")
        let marker = participant.onMessage(F.message(.cut(holders: Set(F.peers)), from: F.initiator), now: .ms(5))
        let bodies = marker.compactMap { if case .send(let m, _) = $0 { m.body } else { nil } }
        #expect(bodies.count == 2)
        #expect(bodies.last == .durable([]))
        #expect(participant.phase == .durable)
    }

    @Test func test_initiatorSilentBeforeTheCut_participantAbortsOnItsOwn_andSaysSo() {
        typealias F = SnapshotFixtures
        var participant = self.prepared()
        #expect(participant.onTick(now: .ms(20_000)) == [.scheduleTick(at: .ms(30_001))])
        let gaveUp = participant.onTick(now: .ms(30_001))
        guard case .abortLocal(let reason) = gaveUp.first else {
            Issue.record("\(gaveUp)")
            return
        }
        #expect(reason.message.contains("no word from the initiator"))
        #expect(participant.phase == .aborted)
    }

    @Test func test_triggerInAPhaseThatCannotCut_isDeclined() {
        typealias F = SnapshotFixtures
        var participant = TestParticipant(prepare: F.message(.prepare(F.plan), from: F.initiator), me: F.peers[0])
        #expect(participant.vmTriggered("sink", now: .ms(1)) == [.declineTrigger("sink")])
    }
}

/// A participant alone: prepare, trigger before the marker, idempotent answers, commit and abort.
@Suite struct SnapshotParticipantTests {
    typealias F = SnapshotFixtures

    func prepared(_ peer: PeerID = F.peers[0]) -> TestParticipant {
        var participant = TestParticipant(prepare: F.message(.prepare(F.plan), from: F.initiator), me: peer)
        #expect(participant.start() == [.prepareLocal(F.plan.vms[peer]!)])
        let answer = participant.localPrepared(ok: true, now: .ms(1))
        let prepared = SnapshotMessage(key: F.key, from: peer, body: .prepared(ok: true, reason: nil, holds: true))
        #expect(answer.first == .send(prepared, to: F.initiator))
        #expect(answer.last == .scheduleTick(at: .ms(30_001)), "the silence limit is watched from now on")
        return participant
    }

    @Test func test_triggerBeforeMarker_cutsThatVMAtOnce_andTheMarkerCutsOnlyTheRest() {
        var participant = self.prepared()
        #expect(participant.vmTriggered("sink", now: .ms(2)) == [.cutVMs(["sink"])])
        #expect(participant.vmTriggered("sink", now: .ms(2)).isEmpty, "a second trigger does not cut twice")
        _ = participant.vmCut(F.report("sink"), now: .ms(3))
        let marker = participant.onMessage(F.message(.cut(holders: Set(F.peers)), from: F.initiator), now: .ms(4))
        #expect(marker == [.cutVMs(["source"])])
        let done = participant.vmCut(F.report("source"), now: .ms(5))
        guard case .send(let message, _) = done.first, case .cutDone(let reports) = message.body else {
            Issue.record("no cutDone: \(done)")
            return
        }
        #expect(reports.map(\.vm) == ["sink", "source"])
        #expect(reports.map(\.triggered) == [true, false])
        // A retransmitted marker is answered with the same reports, and cuts nothing.
        let again = participant.onMessage(F.message(.cut(holders: Set(F.peers)), from: F.initiator), now: .ms(6))
        #expect(again.count == 1)
        #expect(participant.phase == .cut)
    }

    @Test func test_durableIsResentUntilCommit_thenCommittedIsIdempotent() {
        var participant = self.prepared(F.peers[1])
        _ = participant.onMessage(F.message(.cut(holders: Set(F.peers)), from: F.initiator), now: .ms(2))
        _ = participant.vmCut(F.report("relay"), now: .ms(3))
        _ = participant.imagesDurable(now: .ms(4))
        let resent = participant.onTick(now: .ms(204))
        #expect(resent.contains { if case .send(let m, _) = $0 { m.body == .durable([]) } else { false } })
        let commit = participant.onMessage(F.message(.commit([]), from: F.initiator), now: .ms(300))
        #expect(commit.first == .commitLocal([]))
        #expect(participant.phase == .committed)
        #expect(participant.onTick(now: .ms(600)).isEmpty, "no more resends after the commit")
        #expect(participant.onMessage(F.message(.commit([]), from: F.initiator), now: .ms(700)).count == 1)
        // An abort after the commit is not obeyed.
        #expect(
            participant.onMessage(F.message(.abort(SnapshotAbortReason("x")), from: F.initiator), now: .ms(800)).isEmpty
        )
    }

    @Test func test_abortInAnyPhaseBeforeCommit_abortsLocally_once() {
        var participant = self.prepared()
        _ = participant.onMessage(F.message(.cut(holders: Set(F.peers)), from: F.initiator), now: .ms(2))
        let reason = SnapshotAbortReason("h2 did not answer")
        let aborted = participant.onMessage(F.message(.abort(reason), from: F.initiator), now: .ms(3))
        #expect(aborted.first == .abortLocal(reason))
        #expect(participant.phase == .aborted)
        let again = participant.onMessage(F.message(.abort(reason), from: F.initiator), now: .ms(4))
        #expect(again.count == 1, "answered again, not aborted twice")
        #expect(participant.vmCut(F.report("source"), now: .ms(5)).isEmpty)
    }

    @Test func test_staleTerm_isNotAdmitted() {
        #expect(TestParticipant.admits(F.key, highestTerm: 3))
        #expect(!TestParticipant.admits(F.key, highestTerm: 4))
    }
}

extension SnapshotParticipantTests {
    @Test func test_localFailureAfterTheCut_isReportedAndResentUntilTheAbort() {
        typealias F = SnapshotFixtures
        var participant = self.prepared(F.peers[1])
        _ = participant.onMessage(F.message(.cut(holders: Set(F.peers)), from: F.initiator), now: .ms(2))
        _ = participant.vmCut(F.report("relay"), now: .ms(3))
        #expect(participant.phase == .cut)
        let failed = participant.localFailed("h2: snapshot 7, VM relay, chunk 4: No space left on device", now: .ms(4))
        #expect(
            failed.first
                == .send(
                    F.message(.failed("h2: snapshot 7, VM relay, chunk 4: No space left on device"), from: F.peers[1]),
                    to: F.initiator
                )
        )
        #expect(participant.phase == .failed)
        let resent = participant.onTick(now: .ms(205))
        #expect(
            resent.contains {
                if case .send(let m, _) = $0 {
                    m.body == .failed("h2: snapshot 7, VM relay, chunk 4: No space left on device")
                } else {
                    false
                }
            }
        )
        let abort = participant.onMessage(
            F.message(.abort(SnapshotAbortReason("h2 failed")), from: F.initiator),
            now: .ms(300)
        )
        #expect(abort.first == .abortLocal(SnapshotAbortReason("h2 failed")))
        #expect(participant.onTick(now: .ms(600)).isEmpty, "nothing resent after the abort")
    }
}
