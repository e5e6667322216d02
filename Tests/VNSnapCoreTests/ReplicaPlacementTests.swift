import Testing
import VNSnapCore

/// Rendezvous placement of image replicas on store peers: stable, spread, off the VM's host when it can be,
/// within every store's room, and refused with the reason when it cannot be made.
@Suite struct ReplicaPlacementTests {
    static let names = ["s1", "s2", "s3", "s4"]
    static let peers = names.map { PeerID(name: $0) }
    static let mib: UInt64 = 1 << 20

    static func stores(free: UInt64 = 1 << 40, _ names: [String] = names) -> [ReplicaPlacement.Store] {
        names.map { ReplicaPlacement.Store(peer: PeerID(name: $0), name: $0, freeBytes: free) }
    }

    static func images(_ count: Int, host: PeerID = PeerID(name: "h0"), bytes: UInt64 = 128 << 20)
        -> [ReplicaPlacement.Image]
    {
        (0..<count).map { ReplicaPlacement.Image(vm: "vm\($0)", host: host, bytes: bytes) }
    }

    @Test func test_sameView_anyStoreOrder_givesTheSamePlacement() throws {
        let a = try ReplicaPlacement.place(Self.images(20), stores: Self.stores(), replicas: 2)
        let b = try ReplicaPlacement.place(Self.images(20).reversed(), stores: Self.stores().reversed(), replicas: 2)
        #expect(a == b)
        #expect(a.values.allSatisfy { Set($0).count == 2 }, "two distinct stores per VM")
    }

    @Test func test_manyVMs_spreadEvenlyOverTheStores() throws {
        let placed = try ReplicaPlacement.place(Self.images(400), stores: Self.stores(), replicas: 1)
        var counts: [PeerID: Int] = [:]
        for stores in placed.values { counts[stores[0], default: 0] += 1 }
        #expect(counts.count == 4)
        #expect(counts.values.allSatisfy { (70...130).contains($0) }, "\(counts.values.sorted())")
    }

    @Test func test_aStoreLeaving_movesOnlyTheReplicasItHeld() throws {
        let before = try ReplicaPlacement.place(Self.images(200), stores: Self.stores(), replicas: 1)
        let after = try ReplicaPlacement.place(
            Self.images(200),
            stores: Self.stores(["s1", "s2", "s4"]),
            replicas: 1
        )
        for (vm, stores) in before where stores[0] != PeerID(name: "s3") {
            #expect(after[vm] == stores, "\(vm) moved although its store stayed")
        }
    }

    @Test func test_vmOnAStore_getsItsReplicasElsewhere_andItsOwnHostOnlyWhenNothingElseIsLeft() throws {
        let host = PeerID(name: "s2")
        let two = try ReplicaPlacement.place(Self.images(50, host: host), stores: Self.stores(), replicas: 3)
        #expect(two.values.allSatisfy { !$0.contains(host) })
        let all = try ReplicaPlacement.place(Self.images(50, host: host), stores: Self.stores(), replicas: 4)
        #expect(all.values.allSatisfy { $0.last == host })
    }

    @Test func test_storeWithoutRoom_isPassedOver_andRoomIsReservedAsVMsArePlaced() throws {
        // s1 has room for exactly one 128 MiB image; the others for plenty.
        var stores = Self.stores()
        stores[0].freeBytes = 200 * Self.mib
        let placed = try ReplicaPlacement.place(Self.images(40), stores: stores, replicas: 3)
        #expect(placed.values.filter { $0.contains(PeerID(name: "s1")) }.count <= 1)
        #expect(placed.values.allSatisfy { $0.count == 3 })
    }

    @Test func test_tooFewStoresWithRoom_refusesNamingTheVMAndEveryStoresRoom() {
        var stores = Self.stores()
        for index in stores.indices { stores[index].freeBytes = 100 * Self.mib }
        stores[3].freeBytes = 300 * Self.mib
        let images = [ReplicaPlacement.Image(vm: "db", host: PeerID(name: "h0"), bytes: 256 * Self.mib)]
        do {
            _ = try ReplicaPlacement.place(images, stores: stores, replicas: 2)
            Issue.record("placed two 256 MiB replicas with one store of room")
        } catch {
            #expect(error.message.contains("VM db needs 2 replicas of 256.0 MiB; only 1 store(s) have room"))
            #expect(error.message.contains("s1 100.0 MiB free") && error.message.contains("s4 44.0 MiB free"))
        }
        #expect(throws: PlacementError.self) { try ReplicaPlacement.place(images, stores: [], replicas: 1) }
        #expect(throws: PlacementError.self) { try ReplicaPlacement.place(images, stores: stores, replicas: 0) }
    }
}
