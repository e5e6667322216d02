import Testing
import VNSnapCore

/// Where a restore puts each VM: home while its peer is alive; a lost peer's VMs on surviving `vm` peers,
/// spread, where the operator says if it does, refused with the reason when nowhere fits.
@Suite struct RestorePlacementTests {
    static let h = (1...4).map { PeerID(name: "h\($0)") }
    static let pipeline = [
        RestorePlacement.VM(name: "source", peer: h[0], peerName: "h1"),
        RestorePlacement.VM(name: "relay", peer: h[1], peerName: "h2"),
        RestorePlacement.VM(name: "sink", peer: h[2], peerName: "h3"),
    ]

    static func alive(_ indices: [Int]) -> [PeerID: String] {
        Dictionary(uniqueKeysWithValues: indices.map { (h[$0], "h\($0 + 1)") })
    }

    @Test func test_everyPeerAlive_nothingMoves() throws {
        let moved = try RestorePlacement.place(Self.pipeline, alive: Self.alive([0, 1, 2, 3]), hosts: Set(Self.h))
        #expect(moved.isEmpty)
    }

    @Test func test_lostPeer_itsVMGoesToTheLeastLoadedSurvivor() throws {
        // h4 runs none of the VMs, so it takes the relay; h1 and h3 keep theirs.
        let moved = try RestorePlacement.place(Self.pipeline, alive: Self.alive([0, 2, 3]), hosts: Set(Self.h))
        #expect(moved == ["relay": Self.h[3]])
    }

    @Test func test_lostPeerWithTwoVMs_theySpreadOverTheSurvivors() throws {
        let vms = Self.pipeline + [RestorePlacement.VM(name: "cache", peer: Self.h[1], peerName: "h2")]
        let moved = try RestorePlacement.place(vms, alive: Self.alive([0, 2, 3]), hosts: [Self.h[0], Self.h[3]])
        #expect(Set(moved.keys) == ["cache", "relay"])
        #expect(moved.values.contains(Self.h[3]), "h4, which ran none, takes one: \(moved)")
        // The same answer whatever the input order.
        let again = try RestorePlacement.place(
            vms.reversed(),
            alive: Self.alive([3, 2, 0]),
            hosts: [Self.h[3], Self.h[0]]
        )
        #expect(again == moved)
    }

    @Test func test_operatorChoice_placesTheVMThere() throws {
        let moved = try RestorePlacement.place(
            Self.pipeline,
            alive: Self.alive([0, 2, 3]),
            hosts: Set(Self.h),
            chosen: ["relay": "h1"]
        )
        #expect(moved == ["relay": Self.h[0]])
    }

    @Test func test_operatorChoice_forAVMWhosePeerIsAlive_movesIt_andNamingItsOwnPeerMovesNothing() throws {
        let moved = try RestorePlacement.place(
            Self.pipeline,
            alive: Self.alive([0, 2, 3]),
            hosts: [Self.h[0], Self.h[2], Self.h[3]],
            chosen: ["sink": "h1", "source": "h1"]
        )
        #expect(moved["sink"] == Self.h[0])
        #expect(moved["source"] == nil, "already there")
        // The relay's peer is lost: it goes to h3 or h4, which run none now, not to h1, which runs two.
        #expect(moved["relay"].map { [Self.h[2], Self.h[3]].contains($0) } == true, "\(moved)")
    }

    @Test func test_operatorChoice_ofADeadPeerANonVMPeerOrAnUnknownVM_isRefused() {
        #expect(throws: PlacementError("--on relay=h2: no alive peer h2")) {
            try RestorePlacement.place(
                Self.pipeline,
                alive: Self.alive([0, 2]),
                hosts: Set(Self.h),
                chosen: ["relay": "h2"]
            )
        }
        #expect(throws: PlacementError("--on relay=h4: h4 does not have the vm role")) {
            try RestorePlacement.place(
                Self.pipeline,
                alive: Self.alive([0, 2, 3]),
                hosts: [Self.h[0]],
                chosen: ["relay": "h4"]
            )
        }
        #expect(throws: PlacementError("--on db=…: the snapshot has no VM db")) {
            try RestorePlacement.place(
                Self.pipeline,
                alive: Self.alive([0, 2]),
                hosts: Set(Self.h),
                chosen: ["db": "h1"]
            )
        }
    }

    @Test func test_lostPeer_noSurvivorRunsVMs_isRefusedNamingTheVM() {
        #expect(throws: PlacementError("VM relay ran on h2, which is not alive, and no alive peer has the vm role")) {
            try RestorePlacement.place(Self.pipeline, alive: Self.alive([0, 2]), hosts: [])
        }
    }
}
