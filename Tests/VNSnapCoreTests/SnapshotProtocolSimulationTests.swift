import Testing
import VNSnapCore

/// The initiator and its participants together on a simulated network that loses, duplicates and reorders
/// messages, with local work (preparing, cutting, streaming) taking random time: every run must end the same
/// way everywhere — all committed, or all aborted — and never half.
@Suite struct SnapshotProtocolSimulationTests {
    typealias F = SnapshotFixtures

    enum Event {
        case toInitiator(PeerID, SnapshotMessage)
        case toParticipant(PeerID, SnapshotMessage)
        case prepared(PeerID)
        case cut(PeerID, String)
        case durable(PeerID)
        case manifest
        case initiatorTick
        case participantTick(PeerID)
        case trigger(PeerID, String)
        /// Failover: the initiator dies (nothing it has not sent yet is sent).
        case killInitiator
        /// Failover: `peer` takes the snapshot over with a higher term.
        case takeOver(PeerID)
        case takeoverTick
        case takeoverManifest
    }

    struct World {
        var rng: SplitMix64
        var loss: Double
        var silent: Set<PeerID> = []
        /// A VM whose cut fails.
        var failingVM: String?
        var queue: [(Int, Int, Event)] = []  // (time ms, order, event)
        var order = 0
        var initiator: TestInitiator
        var participants: [PeerID: TestParticipant] = [:]
        var outcome: TestInitiator.Outcome?
        var committedLocally: Set<PeerID> = []
        var abortedLocally: Set<PeerID> = []
        /// Failover: whether the first initiator is dead, the phase it died in, and its successor.
        var initiatorDead = false
        var diedIn: TestInitiator.Phase?
        var takeover: TestInitiator?
        var takeoverOutcome: TestInitiator.Outcome?
        /// Whether the successor built the manifest from the durable reports.
        var takeoverBuilt = false

        mutating func at(_ time: Int, _ event: Event) {
            self.order += 1
            self.queue.append((time, self.order, event))
        }

        /// A message: maybe lost, maybe duplicated, always some random 1–30 ms late (so reordered).
        mutating func deliver(_ event: Event, now: Int) {
            guard Double.random(in: 0..<1, using: &self.rng) >= self.loss else { return }
            self.at(now + Int.random(in: 1...30, using: &self.rng), event)
            if Double.random(in: 0..<1, using: &self.rng) < 0.1 {
                self.at(now + Int.random(in: 1...60, using: &self.rng), event)
            }
        }

        mutating func run(until end: Int) {
            while let next = self.queue.min(by: { ($0.0, $0.1) < ($1.0, $1.1) }), next.0 <= end {
                self.queue.removeAll { $0.1 == next.1 }
                self.handle(next.2, now: next.0)
            }
        }

        mutating func handle(_ event: Event, now: Int) {
            let t = TestInstant.ms(now)
            switch event {
            case .toInitiator(let peer, let message):
                if peer == F.initiator, !self.initiatorDead {
                    self.initiatorDo(self.initiator.onMessage(message, now: t), now: now)
                } else if peer == self.takeover?.me {
                    self.takeoverDo(self.takeover!.onMessage(message, now: t), now: now)
                }
            case .toParticipant(let peer, let message):
                guard !self.silent.contains(peer) else { return }
                if self.participants[peer] == nil {
                    // As the shell does for a snapshot it never prepared.
                    if case .inquire = message.body {
                        let answer = SnapshotMessage(key: message.key, from: peer, body: .holding(.nothing))
                        return self.deliver(.toInitiator(message.from, answer), now: now)
                    }
                    guard case .prepare = message.body else { return }
                    let participant = TestParticipant(prepare: message, me: peer)
                    self.participants[peer] = participant
                    self.participantDo(peer, participant.start(), now: now)
                }
                self.participantDo(peer, self.participants[peer]!.onMessage(message, now: t), now: now)
            case .prepared(let peer):
                self.participantDo(peer, self.participants[peer]!.localPrepared(ok: true, now: t), now: now)
                // Sometimes a frame of the new epoch arrives before the marker and triggers a cut.
                if let vm = F.plan.vms[peer]!.randomElement(using: &self.rng), Bool.random(using: &self.rng) {
                    self.at(now + Int.random(in: 1...100, using: &self.rng), .trigger(peer, vm))
                }
            case .trigger(let peer, let vm):
                self.participantDo(peer, self.participants[peer]!.vmTriggered(vm, now: t), now: now)
            case .cut(let peer, let vm):
                if vm == self.failingVM {
                    self.participantDo(
                        peer,
                        self.participants[peer]!.vmCutFailed(vm, reason: "QMP stop failed", now: t),
                        now: now
                    )
                    return
                }
                let report = VMCutReport(
                    vm: vm,
                    cutAtNanoseconds: UInt64(now),
                    downtimeNanoseconds: 5,
                    triggered: false
                )
                self.participantDo(peer, self.participants[peer]!.vmCut(report, now: t), now: now)
                // Its images become durable some time after its last VM is cut, marker or not.
                if self.participants[peer]!.reports.count == F.plan.vms[peer]!.count {
                    self.at(now + Int.random(in: 10...500, using: &self.rng), .durable(peer))
                }
            case .durable(let peer):
                self.participantDo(peer, self.participants[peer]!.imagesDurable(now: t), now: now)
            case .manifest:
                guard !self.initiatorDead else { return }
                self.initiatorDo(self.initiator.manifestWritten([], now: t), now: now)
            case .initiatorTick:
                guard !self.initiatorDead else { return }
                self.initiatorDo(self.initiator.onTick(now: t), now: now)
            case .killInitiator:
                self.initiatorDead = true
                self.diedIn = self.initiator.phase
            case .takeOver(let peer):
                var machine = TestInitiator(
                    takingOver: F.key,
                    term: F.key.term + 1,
                    me: peer,
                    plan: F.plan,
                    holders: self.participants[peer]?.holders,
                    alive: Set(F.peers),
                    now: t
                )
                let directives = machine.start(now: t)
                self.takeover = machine
                self.takeoverDo(directives, now: now)
            case .takeoverTick:
                self.takeoverDo(self.takeover!.onTick(now: t), now: now)
            case .takeoverManifest:
                self.takeoverBuilt = true
                self.takeoverDo(self.takeover!.manifestWritten([9], now: t), now: now)
            case .participantTick(let peer):
                self.participantDo(peer, self.participants[peer]!.onTick(now: t), now: now)
            }
        }

        mutating func initiatorDo(_ directives: [TestInitiator.Directive], now: Int) {
            for directive in directives {
                switch directive {
                case .send(let message, let peer): self.deliver(.toParticipant(peer, message), now: now)
                case .writeManifest: self.at(now + 5, .manifest)
                case .finished(let outcome): self.outcome = outcome
                case .scheduleTick(let at): self.at(max(now + 1, Self.ms(at)), .initiatorTick)
                }
            }
        }

        mutating func takeoverDo(_ directives: [TestInitiator.Directive], now: Int) {
            for directive in directives {
                switch directive {
                case .send(let message, let peer): self.deliver(.toParticipant(peer, message), now: now)
                case .writeManifest: self.at(now + 5, .takeoverManifest)
                case .finished(let outcome): self.takeoverOutcome = outcome
                case .scheduleTick(let at): self.at(max(now + 1, Self.ms(at)), .takeoverTick)
                }
            }
        }

        mutating func participantDo(_ peer: PeerID, _ directives: [TestParticipant.Directive], now: Int) {
            for directive in directives {
                switch directive {
                case .send(let message, let to): self.deliver(.toInitiator(to, message), now: now)
                case .prepareLocal: self.at(now + Int.random(in: 1...50, using: &self.rng), .prepared(peer))
                case .cutVMs(let vms):
                    for vm in vms { self.at(now + Int.random(in: 5...15, using: &self.rng), .cut(peer, vm)) }
                case .commitLocal: self.committedLocally.insert(peer)
                case .abortLocal: self.abortedLocally.insert(peer)
                case .declineTrigger: break
                case .scheduleTick(let at): self.at(max(now + 1, Self.ms(at)), .participantTick(peer))
                }
            }
        }

        static func ms(_ instant: TestInstant) -> Int {
            Int(TestInstant.zero.duration(to: instant) / .milliseconds(1))
        }
    }

    static func world(seed: UInt64, loss: Double, silent: Set<PeerID> = [], failingVM: String? = nil) -> World {
        var world = World(
            rng: SplitMix64(seed: seed),
            loss: loss,
            silent: silent,
            failingVM: failingVM,
            initiator: TestInitiator(key: F.key, me: F.initiator, plan: F.plan, now: .zero)
        )
        world.initiatorDo(world.initiator.start(now: .zero), now: 0)
        return world
    }

    @Test(arguments: [0.0, 0.2, 0.4])
    func test_lossyDuplicatingReorderingNetwork_everyRunCommitsEverywhere(loss: Double) {
        for seed in UInt64(1)...30 {
            var world = Self.world(seed: seed, loss: loss)
            world.run(until: 60_000)
            #expect(world.outcome == .committed, "seed \(seed): \(String(describing: world.outcome))")
            #expect(world.committedLocally == Set(F.peers), "seed \(seed)")
            #expect(world.abortedLocally.isEmpty, "seed \(seed)")
        }
    }

    @Test func test_participantThatNeverAnswers_abortsEverywhere_nobodyCommits() {
        for seed in UInt64(1)...10 {
            var world = Self.world(seed: seed, loss: 0.2, silent: [F.peers[1]])
            world.run(until: 60_000)
            guard case .aborted(let reason) = world.outcome else {
                Issue.record("seed \(seed): \(String(describing: world.outcome))")
                continue
            }
            #expect(reason.message.contains(F.peers[1].description))
            #expect(world.committedLocally.isEmpty)
            #expect(world.abortedLocally == [F.peers[0]], "seed \(seed)")
        }
    }

    @Test func test_aVMWhoseCutFails_abortsEverywhere_evenWithTriggersAndLoss() {
        for seed in UInt64(1)...20 {
            var world = Self.world(seed: seed, loss: 0.2, failingVM: "relay")
            world.run(until: 60_000)
            guard case .aborted(let reason) = world.outcome else {
                Issue.record("seed \(seed): \(String(describing: world.outcome))")
                continue
            }
            #expect(reason.message.contains("QMP stop failed"), "seed \(seed): \(reason)")
            #expect(world.committedLocally.isEmpty, "seed \(seed)")
            // A peer the abort overtook never prepared (or gave up on its own after the silence limit).
            #expect(
                world.abortedLocally == Set(world.participants.keys),
                "seed \(seed): \(world.abortedLocally) phases \(world.participants.mapValues(\.phase))"
            )
        }
    }
}
