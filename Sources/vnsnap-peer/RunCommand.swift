import ArgumentParser
import CVNSnapSys
import Foundation
import Logging
import Metrics
import Prometheus
import VNSnapPeer

/// `vnsnap-peer run`: the daemon.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the peer daemon until SIGTERM or SIGINT.",
        discussion: """
            Reads the config (TOML; see README.md), refuses to start if anything in it or in its keyring is \
            wrong, binds the tunnel socket, the VM port sockets and the control socket, starts this peer's VMs \
            and supervises them; a VM whose QEMU still runs from an earlier start (a crash, an upgrade) is \
            reattached, not started again. On SIGTERM or SIGINT it stops the VMs (quit over QMP, then by pid) and \
            exits, unless --keep-vms (or keep_vms in the config) leaves them running for the next start.
            """
    )

    @Option(name: .shortAndLong, help: "Path of the peer's TOML config file.")
    var config: String

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    @Option(name: .long, help: "Log format: text (one line per record) or json (one JSON object per line).")
    var logFormat: LogFormat = .text

    @Option(name: .long, help: "The QEMU binary to run VMs with (searched in PATH).")
    var qemu: String = "qemu-system-x86_64"

    @Flag(
        name: .customLong("keep-vms"),
        help: "On SIGTERM or SIGINT, leave the VMs running for the next start to reattach."
    )
    var keepVMs = false

    func run() async throws {
        // Image chunks and replica buffers (up to 5 MiB) come and go all the time. glibc's default raises its mmap
        // threshold to the largest block freed, after which such blocks come from the heap's arenas and stay there
        // once freed: a store peer's RSS grew ~45 MiB a round under tools/chaos. Fixed at 1 MiB, they are mapped and
        // returned to the system when freed (the same chaos rounds: flat).
        _ = vnsnap_set_mmap_threshold(1 << 20)
        let (level, format) = (self.logLevel, self.logFormat)
        LoggingSystem.bootstrap { label in
            switch format {
            case .text:
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            case .json:
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
        }
        let logger = Logger(label: "vnsnap-peer")
        var config: PeerConfig
        do {
            config = try PeerConfig.load(path: self.config)
        } catch {
            throw failure("invalid configuration: \(error)")
        }
        if self.keepVMs { config.peer.keepVMs = true }
        // Metrics only when asked for (`[metrics]`): the daemon serves this registry at /metrics.
        var registry: PrometheusCollectorRegistry?
        if config.metrics != nil {
            let collectors = PrometheusCollectorRegistry()
            var factory = PrometheusMetricsFactory(registry: collectors)
            factory.durationHistogramBuckets = PeerMetrics.histogramBuckets
            MetricsSystem.bootstrap(factory)
            registry = collectors
        }
        do {
            try await PeerDaemon.run(config: config, qemu: self.qemu, metrics: registry, logger: logger)
        } catch {
            throw failure("\(error)")
        }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// How `run` writes its log.
enum LogFormat: String, ExpressibleByArgument, CaseIterable {
    case text
    case json
}

/// Prints `message` to standard error and returns the failing exit code to throw.
func failure(_ message: String) -> ExitCode {
    FileHandle.standardError.write(Data(("error: " + message + "\n").utf8))
    return .failure
}
