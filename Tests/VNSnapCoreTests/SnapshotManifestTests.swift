import Foundation
import Testing
import VNSnapCore

/// The manifest document: round trip, derived measurements, refusals that name the problem.
@Suite struct SnapshotManifestTests {
    static let manifest = SnapshotManifest(
        key: SnapshotKey(id: 7, violin: "pipeline", epoch: 1, term: 3),
        name: "halfway",
        vni: 42,
        mode: .cow,
        createdAtNanoseconds: 1_764_000_000_000_000_000,
        initiator: "h2",
        vms: [
            .init(
                name: "sink",
                peer: "h1",
                cut: VMCutReport(vm: "sink", cutAtNanoseconds: 100, downtimeNanoseconds: 6_000_000, triggered: true),
                image: .init(
                    chunkCount: 1,
                    rawBytes: 4 << 20,
                    storedBytes: 1 << 20,
                    digest: String(repeating: "ab", count: 32)
                ),
                measurements: .init(
                    uptime: 900_000_000,
                    downtime: 6_000_000,
                    stall: 9_000_000,
                    cutSkew: 1_000,
                    held: 3,
                    dropped: 0,
                    recorded: 12,
                    timeToDurable: 800_000_000
                )
            )
        ],
        channels: [
            .init(
                vm: "sink",
                frames: 12,
                bytes: 17_880,
                image: .init(
                    chunkCount: 1,
                    rawBytes: 17_928,
                    storedBytes: 9_000,
                    digest: String(repeating: "cd", count: 32)
                ),
                drained: true
            )
        ]
    )

    @Test func test_roundTrip_andDerivedDisruption() throws {
        let data = try Self.manifest.encoded()
        #expect(try SnapshotManifest.decode(data, source: "m.json") == Self.manifest)
        let vm = Self.manifest.vms[0].measurements
        #expect(vm.tcpBackoff == 3_000_000)
        #expect(vm.disruption == 9_000_000)
        #expect(String(decoding: data, as: UTF8.self).contains("\"format\" : \"vnsnap-manifest\""))
    }

    @Test func test_decode_refusesOtherDocumentsAndVersions_namingTheSource() throws {
        var future = try JSONSerialization.jsonObject(with: Self.manifest.encoded()) as! [String: Any]
        future["version"] = 2
        let cases: [(Data, String)] = [
            (Data("not json".utf8), "not a JSON object"),
            (Data("{\"format\": \"something-else\"}".utf8), "not a vnsnap manifest"),
            (try JSONSerialization.data(withJSONObject: future), "manifest version 2"),
            (Data("{\"format\": \"vnsnap-manifest\", \"version\": 1, \"id\": \"x\"}".utf8), "damaged"),
        ]
        for (data, expected) in cases {
            do {
                _ = try SnapshotManifest.decode(data, source: "/var/lib/vnsnap-peer/snapshots/7/manifest.json")
                Issue.record("accepted: \(expected)")
            } catch {
                #expect(error.description.hasPrefix("/var/lib/vnsnap-peer/snapshots/7/manifest.json: "))
                #expect(error.message.contains(expected), "\(error)")
            }
        }
    }
}
