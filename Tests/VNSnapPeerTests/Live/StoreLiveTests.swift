import Foundation
import Testing
import VNSnapCore
import VNSnapImage
import VNSnapPeer

/// Snapshots to memory targets on real peers: the 3-VM pipeline on h1 and h2, stores on h2 and h3. Every image
/// goes to the RAM of two stores (never its own host first), the restore fetches them back (past a damaged
/// chunk on one store), `delete` drops them (on a store that was down, once it is back).
@Suite(.serialized) struct StoreLiveTests {
    static let store = "[peer]\nroles = [\"vm\", \"store\"]\nstore_capacity_mib = 1024\n"

    @Test func test_snapshotToMemoryOfTwoStores_isHeldInTheirRAM_restoresFromThem_andDeleteDropsThem() async throws {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let cluster = try LiveCluster(hosts: ["h1", "h2", "h3"])
        do {
            var configs = PipelineLiveTests.pipelineConfigs(cluster, blocks: 6_000, pace: 2)
            configs["h2"] = configs["h2"]!.replacingOccurrences(of: "[peer]\n", with: Self.store)
            let h3 =
                cluster.baseConfig("h3").replacingOccurrences(of: "[peer]\n", with: Self.store)
                + "\n[[violins]]\nname = \"pipeline\"\nvni = 42\n"
            try cluster.startPeer("h3", config: h3)
            try cluster.startPeer("h2", config: configs["h2"]!)
            try cluster.startPeer("h1", config: configs["h1"]!)
            try await cluster.waitForSerialNumber(
                host: "h1",
                vm: "sink",
                after: "VNSNAP progress blocks=",
                atLeast: 1_000,
                timeout: .seconds(180)
            )
            // More replicas than alive stores: refused by the plan, before anything is prepared.
            do {
                _ = try await cluster.snapshot(
                    "h1",
                    violin: "pipeline",
                    mode: .cow,
                    target: SnapshotTarget(kind: .memory, replicas: 3)
                )
                Issue.record("three replicas on two stores were accepted")
            } catch {
                #expect("\(error)".contains("3 replicas per image need 3 store peers; 2 alive (h2, h3)"), "\(error)")
            }
            #expect(try await cluster.list("h1").isEmpty)
            let manifest = try await cluster.snapshot(
                "h2",
                violin: "pipeline",
                mode: .cow,
                name: "to-ram",
                target: SnapshotTarget(kind: .memory, replicas: 2)
            )
            let replicas = Dictionary(uniqueKeysWithValues: manifest.vms.map { ($0.name, $0.replicas ?? []) })
            #expect(replicas["source"].map(Set.init) == ["h2", "h3"], "\(replicas)")
            #expect(replicas["relay"] == ["h3", "h2"], "the relay's own host h2 comes last: \(replicas)")
            // The images are in the stores, not on the VMs' peers.
            let local = "\(cluster.host("h1").directory)/data/snapshots/\(manifest.id)/source/memory"
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: local)) ?? []).isEmpty)
            // `show` asks the stores where they hold each image now (RAM at first, then RAM and disk once flushed).
            let shown = try await cluster.request("h1", ControlRequest(command: "show", id: manifest.id))
            let locations = shown.replicaLocations?["relay"] ?? [:]
            #expect(Set(locations.keys) == ["h2", "h3"], "\(shown.replicaLocations ?? [:])")
            #expect(locations.values.allSatisfy { $0 == "RAM" || $0 == "RAM and disk" }, "\(locations)")
            let store = try #require(try await cluster.status("h3").store)
            #expect(store.usage.replicas.filter { $0.key.snapshot == manifest.id && $0.sealed }.count == 6)

            let live = try await cluster.waitForSerial(
                host: "h1",
                vm: "sink",
                containing: "verdict=",
                timeout: .seconds(240)
            )
            #expect(live.contains("verdict=ok"), "live run: \(live)")

            // One flipped byte in a chunk of the relay's replica on h3, the store its restore tries first. h3
            // restarts (its replicas come back from its disk); the damaged chunk is refused and h2's replica serves.
            cluster.signalPeer("h3", SIGTERM)
            try await cluster.waitForExit("h3")
            let chunks = "\(cluster.host("h3").directory)/data/replicas/\(manifest.id)/relay/memory"
            let first = try #require(
                try FileManager.default.contentsOfDirectory(atPath: chunks).filter { $0.hasSuffix(".zst") }.min()
            )
            var bytes = [UInt8](try #require(FileManager.default.contents(atPath: "\(chunks)/\(first)")))
            bytes[bytes.count / 2] ^= 0x40
            #expect(FileManager.default.createFile(atPath: "\(chunks)/\(first)", contents: Data(bytes)))
            try cluster.startPeer("h3", config: h3)
            try await cluster.waitUntil("h1", timeout: .seconds(60), "seeing h3 alive again") {
                LiveCluster.states($0)["h3"] == "alive"
            }
            #expect(
                try await cluster.status("h3").store?.usage.replicas.filter { $0.key.snapshot == manifest.id }.count
                    == 6
            )
            try await cluster.restore("h1", id: manifest.id)
            let restored = try await cluster.waitForSerial(
                host: "h1",
                vm: "sink",
                containing: "verdict=",
                timeout: .seconds(240)
            )
            #expect(restored.contains("verdict=ok"), "restored from the stores, past the damaged chunk: \(restored)")
            // The relay runs on h2: its peer fetched the image, h3 first.
            let log = try String(contentsOfFile: "\(cluster.host("h2").directory)/peer.log", encoding: .utf8)
            #expect(
                log.contains("A replica could not serve") && log.contains("store.name=h3"),
                "the damaged replica on h3 was not the one refused"
            )

            // Deleted while h3 is down: h2 drops its replicas at once; h3, back, learns the deletion from another
            // peer's catalog and drops its own.
            cluster.signalPeer("h3", SIGTERM)
            try await cluster.waitForExit("h3")
            _ = try await cluster.request("h1", ControlRequest(command: "delete", id: manifest.id))
            #expect(try await cluster.status("h2").store?.usage.replicas.isEmpty == true)
            try cluster.startPeer("h3", config: h3)
            try await cluster.waitUntil("h3", timeout: .seconds(90), "dropping the deleted snapshot's replicas") {
                $0.store?.usage.replicas.isEmpty == true
            }
            #expect(try await cluster.list("h3").isEmpty)
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }
}
