import Testing
import VNSnapCore

/// A new initiator finishing its predecessor's snapshot: committed if anyone saw the commit or everyone holding
/// VMs is durable, aborted otherwise, and never decided while an alive participant has not answered.
@Suite struct SnapshotRecoveryTests {
    static let (h1, h2, h3) = (PeerID(name: "h1"), PeerID(name: "h2"), PeerID(name: "h3"))
    static let plan = SnapshotPlan(vms: [h1: ["source"], h2: ["sink"], h3: []], mode: .cow, vni: 42)
    static let alive: Set<PeerID> = [h1, h2, h3]
    static let names = [h1: "h1", h2: "h2", h3: "h3"]

    static func durable(_ vm: String) -> SnapshotRecovery.Holding {
        .durable(
            cuts: [VMCutReport(vm: vm, cutAtNanoseconds: 5, downtimeNanoseconds: 7, triggered: false)],
            report: Array(vm.utf8)
        )
    }

    func decide(_ answers: [PeerID: SnapshotRecovery.Holding], alive: Set<PeerID> = alive)
        -> SnapshotRecovery.Decision
    {
        SnapshotRecovery.decide(plan: Self.plan, answers: answers, alive: alive, names: Self.names)
    }

    @Test func test_initiatorDiedAfterCommittingToOne_commitsWithThatManifestEvenIfOthersOnlyDurable() {
        let decision = self.decide([Self.h1: Self.durable("source"), Self.h2: .committed(manifest: [1, 2])])
        #expect(decision == .commit(manifest: [1, 2]))
    }

    @Test func test_initiatorDiedWhileStreamingEnded_everyHolderDurable_buildsFromTheirReports() {
        let decision = self.decide([Self.h1: Self.durable("source"), Self.h2: Self.durable("sink"), Self.h3: .nothing])
        guard case .build(let cuts, let reports) = decision else {
            Issue.record("expected build, got \(decision)")
            return
        }
        #expect(cuts[Self.h1]?.map(\.vm) == ["source"] && cuts[Self.h2]?.map(\.vm) == ["sink"])
        #expect(reports[Self.h2] == Array("sink".utf8))
        #expect(reports[Self.h3] == nil, "a peer without VMs carries no images")
    }

    @Test func test_initiatorDiedDuringPrepareOrCut_abortsNamingTheUnfinishedParticipant() {
        let decision = self.decide([Self.h1: Self.durable("source"), Self.h2: .unfinished, Self.h3: .nothing])
        #expect(decision == .abort("the initiator failed before participant h2's images were durable"))
        #expect(self.decide([Self.h1: .nothing, Self.h2: .nothing, Self.h3: .nothing]) != .commit(manifest: []))
    }

    @Test func test_initiatorDiedWhileImagesStream_holdersStillStreaming_areWaitedFor_thenBuilt() {
        #expect(
            self.decide([Self.h1: Self.durable("source"), Self.h2: .streaming, Self.h3: .nothing])
                == .wait(missing: [Self.h2])
        )
        guard
            case .build = self.decide([
                Self.h1: Self.durable("source"), Self.h2: Self.durable("sink"), Self.h3: .nothing,
            ])
        else {
            Issue.record("every holder durable must build")
            return
        }
        // A holder that will never finish (not cut) makes waiting for the others pointless.
        #expect(
            self.decide([Self.h1: .unfinished, Self.h2: .streaming, Self.h3: .nothing])
                == .abort("the initiator failed before participant h1's images were durable")
        )
    }

    @Test func test_explicitHolders_overrideThePlan_aGonePeerWithoutVMsDoesNotAbort() {
        let plan = SnapshotPlan(vms: [Self.h1: [], Self.h2: [], Self.h3: []], mode: .cow)
        let answers = [Self.h1: Self.durable("source"), Self.h2: Self.durable("sink")]
        let alive: Set<PeerID> = [Self.h1, Self.h2]
        guard
            case .build(_, let reports) = SnapshotRecovery.decide(
                plan: plan,
                holders: [Self.h1, Self.h2],
                answers: answers,
                alive: alive
            )
        else {
            Issue.record("h3 held no VM: its loss must not abort")
            return
        }
        #expect(Set(reports.keys) == [Self.h1, Self.h2])
        #expect(
            SnapshotRecovery.decide(
                plan: plan,
                holders: [Self.h1, Self.h2, Self.h3],
                answers: answers,
                alive: alive,
                names: Self.names
            )
                == .abort("participant h3 is gone, and whether its images are durable is unknown")
        )
    }

    @Test func test_anAbortSeenAnywhere_abortsEverywhere_evenWithOthersDurable() {
        #expect(
            self.decide([Self.h1: .aborted, Self.h2: Self.durable("sink")])
                == .abort("participant h1 had already aborted it")
        )
    }

    @Test func test_aliveParticipantNotAnsweredYet_isWaitedFor_evenWithoutVMs_butAGoneOneWithoutVMsIsNot() {
        #expect(self.decide([Self.h1: Self.durable("source")]) == .wait(missing: [Self.h2, Self.h3]))
        // h3 holds no VM but may have seen the commit: its answer counts.
        let durable = [Self.h1: Self.durable("source"), Self.h2: Self.durable("sink")]
        #expect(self.decide(durable) == .wait(missing: [Self.h3]))
        guard case .build = self.decide(durable, alive: [Self.h1, Self.h2]) else {
            Issue.record("a gone peer without VMs must not hold the decision up")
            return
        }
    }

    @Test func test_holderGone_waitsForEveryAliveAnswer_thenAborts_unlessSomeoneSawTheCommit() {
        let alive: Set<PeerID> = [Self.h1, Self.h3]
        // h3 may have seen the commit (chaos seed 4: a takeover aborted a snapshot its own peer had committed).
        #expect(self.decide([Self.h1: Self.durable("source")], alive: alive) == .wait(missing: [Self.h3]))
        #expect(
            self.decide([Self.h1: Self.durable("source"), Self.h3: .nothing], alive: alive)
                == .abort("participant h2 is gone, and whether its images are durable is unknown")
        )
        #expect(
            self.decide([Self.h1: Self.durable("source"), Self.h3: .committed(manifest: [9])], alive: alive)
                == .commit(manifest: [9])
        )
    }

    @Test func test_sameAnswers_sameDecision_whateverTheirOrder() {
        let answers: [PeerID: SnapshotRecovery.Holding] = [
            Self.h1: .committed(manifest: [1]), Self.h2: .committed(manifest: [1]),
        ]
        #expect(self.decide(answers) == self.decide(Dictionary(uniqueKeysWithValues: answers.reversed())))
    }
}
