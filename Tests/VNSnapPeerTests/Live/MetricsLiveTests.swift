import Foundation
import Testing
import VNSnapCore
import VNSnapPeer

/// `GET /metrics` of real peers, read by the Prometheus project's own text parser (Python `prometheus_client`),
/// after a snapshot and a restore.
@Suite(.serialized) struct MetricsLiveTests {
    static let metrics = "\n[metrics]\naddress = \"127.0.0.1:9464\"\n"

    /// Scrapes the peer on `host` inside its namespace; every sample as "name{label="value",...}" → value, with
    /// the HTTP status of a wrong path and of a POST.
    static let scraper = """
        import json, sys, urllib.request, urllib.error
        from prometheus_client.parser import text_string_to_metric_families
        base = "http://127.0.0.1:9464"
        response = urllib.request.urlopen(base + "/metrics", timeout=10)
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4"), response.headers
        samples, types = {}, {}
        for family in text_string_to_metric_families(response.read().decode()):
            types[family.name] = family.type
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}"] = s.value
        def status(request):
            try:
                return urllib.request.urlopen(request, timeout=10).status
            except urllib.error.HTTPError as error:
                return error.code
        print(json.dumps({"samples": samples, "types": types,
            "notFound": status(base + "/other"),
            "post": status(urllib.request.Request(base + "/metrics", data=b"x", method="POST"))}))
        """

    struct Scrape: Decodable {
        var samples: [String: Double]
        var types: [String: String]
        var notFound: Int
        var post: Int

        /// The sum of every sample of `name` whose labels include each of `labels`.
        func sum(_ name: String, _ labels: [String] = []) -> Double {
            self.samples.filter { key, _ in
                key.hasPrefix(name + "{") && labels.allSatisfy { key.contains($0) }
            }.values.reduce(0, +)
        }
    }

    static func scrape(_ cluster: LiveCluster, _ host: String) throws -> Scrape {
        let output = try cluster.exec(host, ["/usr/bin/python3", "-c", Self.scraper])
        return try JSONDecoder().decode(Scrape.self, from: Data(output.utf8))
    }

    @Test func test_scrapeAfterSnapshotAndRestore_parsesAsPrometheusText_withMembershipSwitchSnapshotAndRestore()
        async throws
    {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let cluster = try LiveCluster(hosts: ["h1", "h2"])
        do {
            let configs = PipelineLiveTests.pipelineConfigs(cluster, blocks: 1_000_000, pace: 20)
            try cluster.startPeer("h1", config: configs["h1"]! + Self.metrics)
            try cluster.startPeer("h2", config: configs["h2"]! + Self.metrics)
            try await cluster.waitForSerialNumber(
                host: "h1",
                vm: "sink",
                after: "VNSNAP progress blocks=",
                atLeast: 50,
                timeout: .seconds(180)
            )
            let manifest = try await cluster.snapshot("h1", violin: "pipeline", mode: .cow, name: "metrics")
            try await cluster.restore("h2", id: manifest.id)

            let scrapes = try ["h1", "h2"].map { try Self.scrape(cluster, $0) }
            func total(_ name: String, _ labels: [String] = []) -> Double {
                scrapes.reduce(0) { $0 + $1.sum(name, labels) }
            }
            for scrape in scrapes {
                #expect(scrape.notFound == 404 && scrape.post == 405)
                #expect(scrape.sum("vnsnap_membership_members", ["state=\"alive\""]) == 2)
                #expect(scrape.sum("vnsnap_membership_term") >= 1)
                #expect(scrape.sum("vnsnap_membership_probes_total", ["kind=\"direct\""]) > 0)
                #expect(scrape.sum("vnsnap_membership_datagrams_total", ["direction=\"sent\""]) > 0)
                #expect(scrape.sum("vnsnap_switch_tunnel_frames_total") > 0)
                #expect(
                    scrape.types["vnsnap_membership_probes"] == "counter",
                    "a counter family is named without _total"
                )
                #expect(scrape.types["vnsnap_membership_members"] == "gauge")
            }
            #expect(total("vnsnap_membership_initiator") == 1, "one initiator between the two")
            #expect(scrapes[0].sum("vnsnap_vms", ["state=\"running\""]) == 2)
            #expect(scrapes[1].sum("vnsnap_vms", ["state=\"running\""]) == 1)
            #expect(scrapes[0].sum("vnsnap_switch_port_frames_total", ["vm=\"source\""]) > 0)
            // Every frame recorded as channel state is in the snapshot's channel logs (the only snapshot here).
            let logged = manifest.channels.reduce(0) { $0 + $1.frames }
            #expect(total("vnsnap_switch_port_recorded_frames_total") == Double(logged), "\(logged) in the logs")
            #expect(scrapes[0].types["vnsnap_switch_port_held_frames"] == "counter")
            // The snapshot, counted where it was initiated; its three VMs in the pause histograms.
            #expect(total("vnsnap_snapshots_total", ["outcome=\"committed\""]) == 1)
            #expect(total("vnsnap_snapshot_vm_downtime_seconds_count") == 3)
            #expect(total("vnsnap_snapshot_vm_durable_seconds_count") == 3)
            #expect(total("vnsnap_snapshot_bytes_total", ["kind=\"raw\""]) >= Double(manifest.vms.count * (1 << 20)))
            #expect(total("vnsnap_snapshot_phase_duration_seconds_count") >= 3, "preparing, cutting, streaming, ...")
            // Pauses in milliseconds' buckets (Prometheus keeps seconds): 1 ms to 5 s.
            let initiator = scrapes.first { $0.sum("vnsnap_snapshot_vm_downtime_seconds_count") > 0 }
            let buckets = Set(
                initiator?.samples.keys.filter { $0.hasPrefix("vnsnap_snapshot_vm_downtime_seconds_bucket{") }
                    .compactMap { $0.split(separator: "\"").dropFirst().first.map(String.init) } ?? []
            )
            #expect(buckets.contains("0.001") && buckets.contains("5.0") && buckets.contains("+Inf"), "\(buckets)")
            // The restore, counted on the peer that asked for it.
            #expect(scrapes[1].sum("vnsnap_restores_total", ["outcome=\"restored\""]) == 1)
            #expect(scrapes[1].sum("vnsnap_restore_duration_seconds_count") == 1)
        } catch {
            Issue.record("\(error)")
            for name in ["h1", "h2"] { print("--- \(name)\n\(cluster.peerLogSummary(name))") }
        }
        await cluster.teardown()
    }
}
