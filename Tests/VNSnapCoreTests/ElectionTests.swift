import Testing
import VNSnapCore

@Suite struct ElectionTests {
    let ids = (0..<5).map { PeerID(name: "p\($0)") }
    var known: Set<PeerID> { Set(self.ids) }
    var sorted: [PeerID] { self.ids.sorted() }

    @Test func test_evaluate_allAlive_shouldPickLowestAndRaiseTerm() {
        var election = Election(storedTerm: 0)
        #expect(
            step(&election) { $0.evaluate(known: self.known, alive: self.known) }
                == .changed(initiator: self.sorted[0], term: 1)
        )
        #expect(step(&election) { $0.evaluate(known: self.known, alive: self.known) } == .unchanged)
        #expect(election.term == 1)
    }

    @Test func test_evaluate_initiatorDies_shouldMoveToNextLowest_withHigherTerm() {
        var election = Election(storedTerm: 7)
        _ = election.evaluate(known: self.known, alive: self.known)
        let rest = self.known.subtracting([self.sorted[0]])
        #expect(
            step(&election) { $0.evaluate(known: self.known, alive: rest) }
                == .changed(initiator: self.sorted[1], term: 9)
        )
    }

    @Test func test_evaluate_everyShapeOfFiveMembers_initiatorOnlyWithMajority() {
        // All 32 subsets of 5 members: an initiator exactly when 3 or more are alive, always the lowest of them.
        for mask in 0..<32 {
            let alive = Set(self.ids.enumerated().filter { mask & (1 << $0.offset) != 0 }.map(\.element))
            var election = Election(storedTerm: 0)
            _ = election.evaluate(known: self.known, alive: alive)
            if alive.count >= 3 {
                #expect(election.initiator == alive.min(), "mask \(mask)")
            } else {
                #expect(election.initiator == nil, "mask \(mask)")
            }
        }
    }

    @Test func test_partition3to2_majoritySideKeepsInitiator_minorityHasNone_termsOnlyRise() {
        let majority = Set(self.sorted[2...4])
        let minority = Set(self.sorted[0...1])
        var big = Election(storedTerm: 0)
        var small = Election(storedTerm: 0)
        _ = big.evaluate(known: self.known, alive: self.known)
        _ = small.evaluate(known: self.known, alive: self.known)
        #expect(
            step(&big) { $0.evaluate(known: self.known, alive: majority) }
                == .changed(initiator: self.sorted[2], term: 2)
        )
        #expect(step(&small) { $0.evaluate(known: self.known, alive: minority) } == .changed(initiator: nil, term: 2))
        // Heal: both see everyone; the majority side's term was adopted by gossip first.
        _ = small.observe(term: big.term)
        #expect(
            step(&small) { $0.evaluate(known: self.known, alive: self.known) }
                == .changed(initiator: self.sorted[0], term: 3)
        )
        #expect(
            step(&big) { $0.evaluate(known: self.known, alive: self.known) }
                == .changed(initiator: self.sorted[0], term: 3)
        )
    }

    @Test func test_observe_lowerTermIgnored_higherAdopted_staleRefused() {
        var election = Election(storedTerm: 10)
        #expect(!step(&election) { $0.observe(term: 4) })
        #expect(election.term == 10)
        #expect(step(&election) { $0.observe(term: 12) })
        #expect(election.isStale(11))
        #expect(!election.isStale(12))
    }

    @Test func test_restart_withStoredTerm_neverGoesLower() {
        var first = Election(storedTerm: 0)
        _ = first.evaluate(known: self.known, alive: self.known)
        _ = first.evaluate(known: self.known, alive: self.known.subtracting([self.sorted[0]]))
        let stored = first.term
        var restarted = Election(storedTerm: stored)
        #expect(
            step(&restarted) { $0.evaluate(known: self.known, alive: self.known) }
                == .changed(initiator: self.sorted[0], term: stored + 1)
        )
        #expect(!step(&restarted) { $0.observe(term: stored) })
    }

    @Test func test_hasQuorum_edges() {
        #expect(!Election.hasQuorum(alive: 0, known: 0))
        #expect(Election.hasQuorum(alive: 1, known: 1))
        #expect(!Election.hasQuorum(alive: 1, known: 2))
        #expect(Election.hasQuorum(alive: 2, known: 3))
        #expect(!Election.hasQuorum(alive: 2, known: 4))
    }
}
