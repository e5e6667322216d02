import ArgumentParser
import Foundation
import VNSnapCore

/// `vnsnap-bench simulate`: one SWIM simulation with progress, for exploring settings.
struct SimulateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Run one in-process SWIM simulation and print what happens every few simulated seconds."
    )

    @Option(help: "Members.") var members = 1000
    @Option(help: "Datagram loss probability.") var loss = 0.0
    @Option(help: "Simulated seconds.") var seconds = 60
    @Option(help: "Report every this many simulated seconds.") var every = 10
    @Option(help: "Seed.") var seed: UInt64 = 1
    @Option(help: "Crash this member at --crash-at seconds.") var crash: Int?
    @Option(help: "When to crash it.") var crashAt = 5
    @Flag(help: "Plain SWIM: Lifeguard off.") var plain = false
    @Option(help: "α: suspicion starts at α·log10(n) probe intervals.") var alpha: Double?
    @Option(help: "λ: retransmit multiplier.") var lambda: Int?
    @Option(help: "Most updates piggybacked on one message.") var piggyback: Int?
    @Option(help: "k: members asked for indirect probes.") var indirect: Int?

    func run() throws {
        var configuration = SWIMSimulation.Configuration(members: self.members)
        configuration.loss = self.loss
        configuration.seed = self.seed
        configuration.settings.lifeguard = !self.plain
        if let alpha = self.alpha { configuration.settings.suspicionMultiplier = alpha }
        if let lambda = self.lambda { configuration.settings.retransmitMultiplier = lambda }
        if let piggyback = self.piggyback { configuration.settings.maxPiggyback = piggyback }
        if let indirect = self.indirect { configuration.settings.indirectProbes = indirect }
        let started = Date()
        let simulation = SWIMSimulation(configuration)
        print("built \(self.members) members in \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
        var t = 0
        while t < self.seconds {
            let step = min(self.every, self.seconds - t)
            if let crash = self.crash, t <= self.crashAt, self.crashAt < t + step {
                simulation.run(until: SimInstant.zero.advanced(by: .seconds(self.crashAt)))
                simulation.crash(crash)
            }
            t += step
            let wall = Date()
            simulation.run(until: SimInstant.zero.advanced(by: .seconds(t)))
            var line =
                "t=\(t)s datagrams=\(simulation.datagrams) bytes=\(simulation.bytes) falsePositives=\(simulation.falsePositives.count)"
            line += " suspicions=\(simulation.observations.filter { $0.status == .suspect }.count)"
            if let crash = self.crash { line += " allSeeDead=\(simulation.allSeeDead(crash))" }
            line += " wall=\(String(format: "%.1f", Date().timeIntervalSince(wall)))s"
            let health = simulation.instances.map(\.localHealthScore)
            line +=
                " lhm.mean=\(String(format: "%.2f", Double(health.reduce(0, +)) / Double(health.count))) lhm.max=\(health.max() ?? 0)"
            print(line)
        }
        if let first = simulation.falsePositives.first {
            print("first false positive: member \(first.subject) declared dead by \(first.observer) at \(first.time)")
            for o in simulation.observations
            where o.subject == first.subject && o.time.nanoseconds <= first.time.nanoseconds + 2_000_000_000 {
                if o.observer == first.observer || o.status != .suspect {
                    print("  \(o.time) observer \(o.observer): \(o.status) inc \(o.incarnation)")
                }
            }
            print("  its incarnation now: \(simulation.instances[first.subject].me.incarnation)")
        }
    }
}
