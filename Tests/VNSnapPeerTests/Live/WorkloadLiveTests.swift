import Foundation
import Testing
import VNSnapCore
import VNSnapPeer

/// The paper's two kinds of application (issue 16), in real guests across two peers: an MPI-style solver whose
/// ranks exchange halos every iteration, and a swarm downloading a file from each other. Each is snapshotted
/// mid-run in every mode that keeps the cut consistent and restored from each snapshot; every run, live and
/// restored, must end with the answer known in advance.
@Suite(.serialized) struct WorkloadLiveTests {
    /// A VM of a workload: its name, its peer and its kernel command line.
    struct Rank {
        var name: String
        var host: String
        var append: String
    }

    static let modes: [SnapshotMode] = [.cow, .precopy, .drop]

    @Test func test_haloSolver_snapshottedInEveryMode_liveAndEveryRestoredRunEndWithTheSerialChecksum()
        async throws
    {
        let iterations = 9000
        let hosts = ["10.10.4.1", "10.10.4.2", "10.10.4.3"].joined(separator: ",")
        let ranks = (0..<3).map { rank in
            Rank(
                name: "rank\(rank)",
                host: rank < 2 ? "h1" : "h2",
                append:
                    "vnsnap.role=halo vnsnap.ip=10.10.4.\(rank + 1)/24 vnsnap.rank=\(rank) vnsnap.hosts=\(hosts) vnsnap.iters=\(iterations) vnsnap.cells=2048 vnsnap.reduce=100"
            )
        }
        try await self.run(
            ranks,
            violin: "halo",
            vni: 44,
            checked: ranks.map(\.name),
            progress: (vm: "rank0", prefix: "VNSNAP halo rank=0 iter=", total: iterations)
        )
    }

    @Test func test_swarm_snapshottedInEveryMode_everyDownloaderLiveAndRestoredEndsWithTheWholeFile() async throws {
        let pieces = 1200
        let hosts = ["10.10.5.1", "10.10.5.2", "10.10.5.3", "10.10.5.4"].joined(separator: ",")
        let ranks = (0..<4).map { rank in
            Rank(
                name: rank == 0 ? "seed" : "peer\(rank)",
                host: rank == 1 || rank == 2 ? "h1" : "h2",
                append:
                    "vnsnap.role=swarm vnsnap.ip=10.10.5.\(rank + 1)/24 vnsnap.rank=\(rank) vnsnap.hosts=\(hosts) vnsnap.pieces=\(pieces) vnsnap.piece_kib=8 vnsnap.pace=40"
            )
        }
        try await self.run(
            ranks,
            violin: "swarm",
            vni: 45,
            checked: ["peer1", "peer2", "peer3"],
            progress: (vm: "peer1", prefix: "VNSNAP swarm rank=1 have=", total: pieces)
        )
    }

    /// Starts `ranks` on h1 and h2, takes one snapshot per mode at growing points of the run (20, 40, 60 % of
    /// `progress.total` as the number after `progress.prefix` in the serial log of `progress.vm`, on h1), checks
    /// the live run's verdicts, then restores each snapshot and checks the VMs in `checked` end with `verdict=ok`
    /// again, having made progress after the cut (the snapshot was mid-run).
    func run(
        _ ranks: [Rank],
        violin: String,
        vni: Int,
        checked: [String],
        progress: (vm: String, prefix: String, total: Int)
    ) async throws {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let cluster = try LiveCluster(hosts: ["h1", "h2"])
        let host = Dictionary(uniqueKeysWithValues: ranks.map { ($0.name, $0.host) })
        do {
            for peer in ["h1", "h2"] {
                var config = cluster.baseConfig(peer) + "\n[[violins]]\nname = \"\(violin)\"\nvni = \(vni)\n"
                for (index, rank) in ranks.enumerated() where rank.host == peer {
                    config += LiveCluster.guestVM(
                        name: rank.name,
                        violin: violin,
                        mac: String(format: "52:54:00:00:%02x:%02x", vni, index + 1),
                        append: rank.append
                    )
                }
                try cluster.startPeer(peer, config: config)
            }
            var manifests: [SnapshotManifest] = []
            for (index, mode) in Self.modes.enumerated() {
                try await cluster.waitForSerialNumber(
                    host: "h1",
                    vm: progress.vm,
                    after: progress.prefix,
                    atLeast: Int(Double(progress.total) * (0.2 + 0.2 * Double(index))),
                    timeout: .seconds(240)
                )
                manifests.append(try await cluster.snapshot("h1", violin: violin, mode: mode, name: "\(mode)"))
            }
            for vm in checked {
                let live = try await cluster.verdict(host: host[vm]!, vm: vm)
                #expect(live.contains("verdict=ok"), "live run, \(vm): \(live)")
            }
            for manifest in manifests {
                try await cluster.restore("h2", id: manifest.id)
                for vm in checked {
                    let restored = try await cluster.verdict(host: host[vm]!, vm: vm)
                    #expect(
                        restored.contains("verdict=ok"),
                        "restored from \(manifest.name) (\(manifest.mode)), \(vm): \(restored)"
                    )
                }
            }
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }
}
