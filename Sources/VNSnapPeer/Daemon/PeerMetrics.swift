import Metrics
import Synchronization
import VNSnapCore
import VNSnapImage

/// The peer's metrics, through swift-metrics (only `vnsnap-peer run` bootstraps a backend: Prometheus, served by
/// `MetricsServer`). Names are dotted and stable, each with a fixed set of labels; Prometheus shows the dots as
/// underscores (`vnsnap.membership.members` is `vnsnap_membership_members`); counters end in `total`, as
/// Prometheus expects. README lists them all.
public enum PeerMetrics {
    /// Histograms of pauses and stalls: milliseconds.
    public static let pauseBuckets: [Duration] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000].map {
        .milliseconds($0)
    }
    /// Histograms of whole snapshots, phases, durability and restores: seconds.
    public static let durationBuckets: [Duration] = [0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600].map {
        .milliseconds(Int($0 * 1000))
    }
    /// The histograms and their buckets (the factory is told them at bootstrap).
    public static let histogramBuckets: [String: [Duration]] = [
        "vnsnap.snapshot.vm.downtime.seconds": pauseBuckets,
        "vnsnap.snapshot.vm.stall.seconds": pauseBuckets,
        "vnsnap.snapshot.cut.skew.seconds": pauseBuckets,
        "vnsnap.snapshot.vm.durable.seconds": durationBuckets,
        "vnsnap.snapshot.duration.seconds": durationBuckets,
        "vnsnap.snapshot.phase.duration.seconds": durationBuckets,
        "vnsnap.restore.duration.seconds": durationBuckets,
    ]

    /// A snapshot this peer initiated has ended (`manifest` once committed).
    static func snapshotEnded(committed: Bool, duration: Duration, manifest: SnapshotManifest?) {
        Counter(label: "vnsnap.snapshots.total", dimensions: [("outcome", committed ? "committed" : "aborted")])
            .increment()
        Timer(label: "vnsnap.snapshot.duration.seconds", dimensions: [("outcome", committed ? "committed" : "aborted")])
            .record(duration: duration)
        guard let manifest else { return }
        var raw: UInt64 = 0
        var stored: UInt64 = 0
        for vm in manifest.vms {
            Timer(label: "vnsnap.snapshot.vm.downtime.seconds").recordNanoseconds(
                Int64(clamping: vm.measurements.downtime)
            )
            Timer(label: "vnsnap.snapshot.vm.stall.seconds").recordNanoseconds(Int64(clamping: vm.measurements.stall))
            Timer(label: "vnsnap.snapshot.vm.durable.seconds").recordNanoseconds(
                Int64(clamping: vm.measurements.timeToDurable)
            )
            raw += vm.image.rawBytes
            stored += vm.image.storedBytes
        }
        let skew = manifest.vms.map(\.measurements.cutSkew).max() ?? 0
        Timer(label: "vnsnap.snapshot.cut.skew.seconds").recordNanoseconds(Int64(clamping: skew))
        Counter(label: "vnsnap.snapshot.bytes.total", dimensions: [("kind", "raw")]).increment(by: Int64(clamping: raw))
        Counter(label: "vnsnap.snapshot.bytes.total", dimensions: [("kind", "stored")]).increment(
            by: Int64(clamping: stored)
        )
        let frames = manifest.channels.reduce(0) { $0 + $1.frames }
        Counter(label: "vnsnap.snapshot.channel.frames.total").increment(by: Int64(clamping: frames))
    }

    /// A phase of a snapshot this peer initiated has ended after `duration`.
    static func phaseEnded(_ phase: String, duration: Duration) {
        Timer(label: "vnsnap.snapshot.phase.duration.seconds", dimensions: [("phase", phase)]).record(
            duration: duration
        )
    }

    /// A restore asked on this peer has ended.
    static func restoreEnded(succeeded: Bool, duration: Duration) {
        let outcome = succeeded ? "restored" : "failed"
        Counter(label: "vnsnap.restores.total", dimensions: [("outcome", outcome)]).increment()
        Timer(label: "vnsnap.restore.duration.seconds", dimensions: [("outcome", outcome)]).record(duration: duration)
    }

    /// A store refused a replica (no room).
    static func storeRefused() {
        Counter(label: "vnsnap.store.refusals.total").increment()
    }
}

/// Mirrors the peer's status into metrics at each scrape: gauges set, counters advanced by what the status's own
/// counters gained since the last scrape (one that went down, a member's restart, counts from zero again).
final class StatusMetrics: Sendable {
    private let last = Mutex<[String: UInt64]>([:])

    /// Sets every metric from `status`.
    func update(_ status: PeerStatus) {
        let membership = status.membership
        var states = ["alive": 0, "suspect": 0, "dead": 0, "left": 0]
        for member in membership.members { states[member.state, default: 0] += 1 }
        for (state, count) in states {
            Gauge(label: "vnsnap.membership.members", dimensions: [("state", state)]).record(count)
        }
        Gauge(label: "vnsnap.membership.term").record(Double(membership.election.term))
        Gauge(label: "vnsnap.membership.initiator").record(membership.election.initiator == status.peer.name ? 1 : 0)
        Gauge(label: "vnsnap.membership.majority").record(membership.election.majority ? 1 : 0)
        Gauge(label: "vnsnap.membership.local.health").record(membership.localHealth)
        let counters = membership.counters ?? SWIMCounters()
        self.advance("vnsnap.membership.probes.total", [("kind", "direct")], to: counters.probes)
        self.advance("vnsnap.membership.probes.total", [("kind", "indirect")], to: counters.indirectProbes)
        self.advance("vnsnap.membership.suspicions.total", [], to: counters.suspicions)
        self.advance("vnsnap.membership.refutations.total", [], to: counters.refutations)
        self.advance("vnsnap.membership.deaths.total", [], to: counters.declaredDead)
        self.advance("vnsnap.membership.datagrams.total", [("direction", "sent")], to: membership.datagramsSent)
        self.advance("vnsnap.membership.datagrams.total", [("direction", "received")], to: membership.datagramsReceived)
        for (reason, count) in membership.rejected {
            self.advance("vnsnap.membership.rejected.total", [("reason", reason.rawValue)], to: count)
        }

        let network = status.switch
        for port in network.ports {
            let labels = [("vm", port.vm), ("violin", port.violin)]
            self.traffic("port", labels, port.counters)
            self.advance("vnsnap.switch.port.held.frames.total", labels, to: port.held)
            self.advance("vnsnap.switch.port.recorded.frames.total", labels, to: port.recorded)
        }
        for tunnel in network.tunnels {
            self.traffic("tunnel", [("peer", tunnel.peer)], tunnel.counters)
            Gauge(label: "vnsnap.switch.tunnel.up", dimensions: [("peer", tunnel.peer)]).record(tunnel.up ? 1 : 0)
        }
        for (reason, count) in network.rejected {
            self.advance("vnsnap.switch.rejected.total", [("reason", reason.rawValue)], to: count)
        }

        var vms: [String: Int] = [:]
        for vm in status.vms { vms[vm.state, default: 0] += 1 }
        for state in Set(vms.keys).union(["starting", "running", "restoring", "moved", "exited", "stopped", "failed"]) {
            Gauge(label: "vnsnap.vms", dimensions: [("state", state)]).record(vms[state] ?? 0)
        }

        if let store = status.store?.usage {
            Gauge(label: "vnsnap.store.ram.budget.bytes").record(Double(store.ramBudget))
            Gauge(label: "vnsnap.store.ram.used.bytes").record(Double(store.ramUsed))
            Gauge(label: "vnsnap.store.disk.bytes").record(Double(store.diskBytes))
            Gauge(label: "vnsnap.store.replicas", dimensions: [("location", "ram")])
                .record(store.replicas.filter(\.inRAM).count)
            Gauge(label: "vnsnap.store.replicas", dimensions: [("location", "disk")])
                .record(store.replicas.filter(\.onDisk).count)
        }
    }

    /// A port's or tunnel's frames and bytes each way, and its drops by reason.
    private func traffic(_ kind: String, _ labels: [(String, String)], _ counters: TrafficCounters) {
        self.advance("vnsnap.switch.\(kind).frames.total", labels + [("direction", "rx")], to: counters.rxFrames)
        self.advance("vnsnap.switch.\(kind).frames.total", labels + [("direction", "tx")], to: counters.txFrames)
        self.advance("vnsnap.switch.\(kind).bytes.total", labels + [("direction", "rx")], to: counters.rxBytes)
        self.advance("vnsnap.switch.\(kind).bytes.total", labels + [("direction", "tx")], to: counters.txBytes)
        for (reason, count) in counters.drops {
            self.advance("vnsnap.switch.\(kind).drops.total", labels + [("reason", reason.rawValue)], to: count)
        }
    }

    /// Advances a counter to `value`, counting what was added since the last scrape.
    private func advance(_ label: String, _ dimensions: [(String, String)], to value: UInt64) {
        let key = label + dimensions.map { "|\($0.0)=\($0.1)" }.joined()
        let added = self.last.withLock { last -> UInt64 in
            let before = last[key] ?? 0
            last[key] = value
            return value >= before ? value - before : value
        }
        // Made even at zero, so every series exists from the first scrape (a rate needs both ends).
        let counter = Counter(label: label, dimensions: dimensions)
        if added > 0 { counter.increment(by: Int64(clamping: added)) }
    }
}
