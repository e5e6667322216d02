import ArgumentParser
import Foundation
import Logging
import NIOCore
import VNSnapCore
import VNSnapCrypto
import VNSnapPeer

/// `vnsnap-bench switch-alone`: frames per second and added latency through two peers' switches and a
/// sealed tunnel, side by side with a plain unencrypted UDP forwarder and a direct socket-to-socket path.
struct SwitchAloneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switch-alone",
        abstract: "Measure the switch without VMs: frames/s and added latency, against a plain UDP forwarder."
    )

    @Option(help: "Rounds; each measures every variant once, in turn. Medians are over rounds.")
    var rounds: Int = 5
    @Option(help: "Seconds of each throughput measurement.")
    var seconds: Double = 3
    @Option(help: "Frame size in bytes.")
    var frameSize: Int = 1500
    @Option(help: "Frames in flight at most during throughput runs.")
    var window: Int = 256
    @Option(help: "Latency samples per round.")
    var samples: Int = 3000

    enum Variant: String, CaseIterable {
        case direct = "direct (socket to socket, no hops)"
        case plain = "plain UDP forwarder (2 hops, no crypto)"
        case vnsnap = "vnsnap switch (2 switches, sealed tunnel)"
    }

    struct Sample {
        var framesPerSecond: Double
        var lost: Int
        var latencyMedian: Double
        var latencyP99: Double
        /// CPU the forwarding path used per delivered frame, both hops together (0 for direct).
        var cpuPerFrame: Double
    }

    func run() async throws {
        let directory = "/tmp/vnsnap-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var results: [Variant: [Sample]] = [:]
        for round in 1...self.rounds {
            for variant in Variant.allCases {
                let sample = try await self.measure(variant, directory: directory)
                results[variant, default: []].append(sample)
                FileHandle.standardError.write(
                    Data(
                        "round \(round) \(variant): \(Int(sample.framesPerSecond)) frames/s, median \(Int(sample.latencyMedian / 1000)) µs\n"
                            .utf8
                    )
                )
            }
        }
        print(
            "frame size \(self.frameSize) B, window \(self.window), \(self.rounds) rounds of \(self.seconds) s, \(self.samples) latency samples/round"
        )
        print("| path | frames/s (median) | Mbit/s | lost | one-way latency median | p99 | CPU per frame, both hops |")
        print("|---|---|---|---|---|---|---|")
        var medians: [Variant: (Double, Double)] = [:]
        for variant in Variant.allCases {
            let samples = results[variant]!
            let fps = Self.median(samples.map(\.framesPerSecond))
            let latency = Self.median(samples.map(\.latencyMedian))
            let p99 = Self.median(samples.map(\.latencyP99))
            let cpu = Self.median(samples.map(\.cpuPerFrame))
            medians[variant] = (fps, latency)
            let mbits = fps * Double(self.frameSize) * 8 / 1e6
            print(
                "| \(variant.rawValue) | \(Int(fps)) | \(Int(mbits)) | \(samples.map(\.lost).reduce(0, +)) | \(String(format: "%.1f", latency / 1000)) µs | \(String(format: "%.1f", p99 / 1000)) µs | \(variant == .direct ? "-" : String(format: "%.2f µs", cpu / 1000)) |"
            )
        }
        let vCPU = Self.median(results[.vnsnap]!.map(\.cpuPerFrame))
        let pCPU = Self.median(results[.plain]!.map(\.cpuPerFrame))
        let (vFPS, vLat) = medians[.vnsnap]!
        let (pFPS, pLat) = medians[.plain]!
        let (_, dLat) = medians[.direct]!
        print("")
        print("vnsnap / plain throughput: \(String(format: "%.2f", vFPS / pFPS))")
        print(
            "vnsnap CPU per frame: \(String(format: "%.2f", vCPU / 1000)) µs for both switches → \(Int(1e9 / vCPU * 2)) frames/s if each switch had one of the 2 cores; plain: \(String(format: "%.2f", pCPU / 1000)) µs"
        )
        print(
            "added latency (vnsnap − direct): \(String(format: "%.1f", (vLat - dLat) / 1000)) µs; plain − direct: \(String(format: "%.1f", (pLat - dLat) / 1000)) µs"
        )
    }

    private func measure(_ variant: Variant, directory: String) async throws -> Sample {
        let generator = LoadGenerator(directory: directory)
        defer { generator.close() }
        let entry: String
        var cleanup: () async -> Void = {}
        var cpuBefore: () async -> UInt64 = { 0 }
        var cpuAfter: () async -> UInt64 = { 0 }
        switch variant {
        case .direct:
            entry = generator.nicB
        case .plain:
            let forwarder = PlainForwarder(directory: directory, nicB: generator.nicB)
            entry = forwarder.portA
            cleanup = { forwarder.close() }
            cpuAfter = {
                forwarder.close()
                return UInt64(forwarder.cpu.load())
            }
        case .vnsnap:
            let (a, b) = try await Self.startSwitches(directory: directory, generator: generator)
            entry = directory + "/a.port"
            generator.announceB(portB: directory + "/b.port")
            let cpu: () async -> UInt64 = {
                ((try? await a.threadCPUNanoseconds()) ?? 0) + ((try? await b.threadCPUNanoseconds()) ?? 0)
            }
            cpuBefore = cpu
            cpuAfter = cpu
            cleanup = {
                if ProcessInfo.processInfo.environment["VNSNAP_BENCH_DEBUG"] != nil {
                    for sw in [a, b] {
                        if let status = try? await sw.status() {
                            FileHandle.standardError.write(
                                Data(
                                    "\(status.ports.map(\.counters)) \(status.tunnels.map(\.counters)) \(status.rejected)\n"
                                        .utf8
                                )
                            )
                        }
                    }
                }
                await a.close()
                await b.close()
            }
        }
        let startCPU = await cpuBefore()
        let (fps, lost) = generator.throughput(
            portA: entry,
            frameSize: self.frameSize,
            seconds: self.seconds,
            window: self.window
        )
        let usedCPU = await cpuAfter() - startCPU
        var latencyEntry = entry
        if variant == .plain {
            // Its CPU clock was read by stopping it: latency runs on a fresh forwarder.
            await cleanup()
            let forwarder = PlainForwarder(directory: directory, nicB: generator.nicB)
            latencyEntry = forwarder.portA
            cleanup = { forwarder.close() }
        }
        let latencies = generator.latencies(portA: latencyEntry, frameSize: self.frameSize, samples: self.samples)
            .sorted()
        await cleanup()
        return Sample(
            framesPerSecond: fps,
            lost: lost,
            latencyMedian: Double(latencies[latencies.count / 2]),
            latencyP99: Double(latencies[latencies.count * 99 / 100]),
            cpuPerFrame: fps > 0 ? Double(usedCPU) / (fps * self.seconds) : 0
        )
    }

    static func startSwitches(directory: String, generator: LoadGenerator) async throws -> (
        SwitchService, SwitchService
    ) {
        let violin = Violin(name: "bench", vni: VNI(1)!)
        let keyring = Keyring(keys: [SecretKey.generate()])!
        let logger = Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() })
        func start(_ name: String, nic: String) async throws -> SwitchService {
            try await SwitchService.start(
                me: name,
                bind: HostPort(host: "127.0.0.1", port: 0),
                crypto: TunnelCrypto(keyring: keyring, clusterName: "bench"),
                violins: [violin],
                ports: [
                    .init(vm: "vm-\(name)", violin: violin, switchSocket: "\(directory)/\(name).port", vmSocket: nic)
                ],
                tunnels: [],
                session: UInt64(Date().timeIntervalSince1970 * 1e9),
                logger: logger
            )
        }
        let a = try await start("a", nic: generator.nicA)
        let b = try await start("b", nic: generator.nicB)
        try await a.addTunnel(.init(name: "b", address: HostPort(host: "127.0.0.1", port: b.tunnelAddress.port!)))
        try await b.addTunnel(.init(name: "a", address: HostPort(host: "127.0.0.1", port: a.tunnelAddress.port!)))
        return (a, b)
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
    }
}
