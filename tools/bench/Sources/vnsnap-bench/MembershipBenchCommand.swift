import ArgumentParser
import Foundation
import VNSnapCore

/// `vnsnap-bench membership`: the membership table of BENCHMARKS.md — detection time, false positives and
/// load per member, Lifeguard next to plain SWIM, medians over several seeds, all in one run.
struct MembershipBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "membership",
        abstract: "SWIM simulations: crash detection, false positives under loss, load per member; Lifeguard vs plain."
    )

    @Option(help: "Cluster sizes, comma separated.") var sizes = "100,1000"
    @Option(help: "Loss rates for the false-positive runs, comma separated.") var losses = "0,0.05,0.1,0.2"
    @Option(help: "Seeds per measurement (medians are over these).") var seeds = 3
    @Option(help: "Simulated seconds of each false-positive run.") var seconds = 120
    @Option(help: "Simulated seconds after the crash a detection run may take.") var detectionLimit = 60
    @Option(help: "Sizes at or above this get one false-positive run per loss (the largest runs are costly).")
    var bigSize = 5000
    @Flag(help: "Only Lifeguard (skip the plain SWIM comparison).") var lifeguardOnly = false

    func run() throws {
        let sizes = try Self.parse(self.sizes, as: Int.self, name: "--sizes")
        let losses = try Self.parse(self.losses, as: Double.self, name: "--losses")
        let modes = self.lifeguardOnly ? [true] : [true, false]
        print(
            "| members | protocol | detection by all (s), median [min–max] | false dead per member-hour at "
                + losses.map { "\(Int($0 * 100)) %" }.joined(separator: " / ")
                + " | datagrams / member·s | bytes / member·s |"
        )
        print("|---|---|---|---|---|---|")
        for size in sizes {
            for lifeguard in modes {
                let seedCount = size >= self.bigSize ? 1 : self.seeds
                var detections: [Double] = []
                var datagrams: [Double] = []
                var bytes: [Double] = []
                for seed in 1...UInt64(seedCount) {
                    let run = self.detection(size: size, lifeguard: lifeguard, seed: seed)
                    if let time = run.time { detections.append(time) }
                    datagrams.append(run.datagramsPerMemberSecond)
                    bytes.append(run.bytesPerMemberSecond)
                }
                var rates: [String] = []
                for loss in losses {
                    var perSeed: [Double] = []
                    for seed in 1...UInt64(seedCount) {
                        perSeed.append(self.falsePositives(size: size, loss: loss, lifeguard: lifeguard, seed: seed))
                    }
                    rates.append(Self.format(Self.median(perSeed), digits: 3))
                }
                let detected =
                    detections.isEmpty
                    ? "not within \(self.detectionLimit) s"
                    : "\(Self.format(Self.median(detections), digits: 1)) [\(Self.format(detections.min()!, digits: 1))–\(Self.format(detections.max()!, digits: 1))]"
                let missed = seedCount - detections.count
                print(
                    "| \(size) | \(lifeguard ? "Lifeguard" : "plain SWIM") | \(detected)\(missed > 0 && !detections.isEmpty ? " (\(missed) of \(seedCount) not detected)" : "")"
                        + " | \(rates.joined(separator: " / ")) | \(Self.format(Self.median(datagrams), digits: 1)) | \(Self.format(Self.median(bytes), digits: 0)) |"
                )
                fflush(nil)
            }
        }
    }

    struct Detection {
        var time: Double?
        var datagramsPerMemberSecond: Double
        var bytesPerMemberSecond: Double
    }

    /// No loss; member 0 crashes at 10 s; the time until the last member marks it dead. Load is measured over
    /// the 10 s before the crash (a quiet, converged cluster).
    func detection(size: Int, lifeguard: Bool, seed: UInt64) -> Detection {
        var configuration = SWIMSimulation.Configuration(members: size)
        configuration.seed = seed
        configuration.settings.lifeguard = lifeguard
        let simulation = SWIMSimulation(configuration)
        simulation.run(until: .zero.advanced(by: .seconds(5)))
        let (d0, b0) = (simulation.datagrams, simulation.bytes)
        simulation.run(until: .zero.advanced(by: .seconds(10)))
        let window = 5.0 * Double(size)
        let load = (Double(simulation.datagrams - d0) / window, Double(simulation.bytes - b0) / window)
        let victim = 0
        simulation.crash(victim)
        let crashedAt = simulation.now
        var t = 10
        while t < 10 + self.detectionLimit, !simulation.allSeeDead(victim) {
            t += 1
            simulation.run(until: .zero.advanced(by: .seconds(t)))
        }
        guard simulation.allSeeDead(victim) else {
            return Detection(time: nil, datagramsPerMemberSecond: load.0, bytesPerMemberSecond: load.1)
        }
        // The moment the last observer's first `dead` (or `left`) arrived.
        var firstDead: [Int: SimInstant] = [:]
        for observation in simulation.observations where observation.subject == victim && !observation.status.isActive {
            if firstDead[observation.observer] == nil { firstDead[observation.observer] = observation.time }
        }
        let last = firstDead.values.max { $0.nanoseconds < $1.nanoseconds } ?? crashedAt
        return Detection(
            time: Double(last.nanoseconds - crashedAt.nanoseconds) / 1e9,
            datagramsPerMemberSecond: load.0,
            bytesPerMemberSecond: load.1
        )
    }

    /// Members declared dead although none crashed, per member-hour.
    func falsePositives(size: Int, loss: Double, lifeguard: Bool, seed: UInt64) -> Double {
        var configuration = SWIMSimulation.Configuration(members: size)
        configuration.seed = seed
        configuration.loss = loss
        configuration.settings.lifeguard = lifeguard
        let simulation = SWIMSimulation(configuration)
        simulation.run(until: .zero.advanced(by: .seconds(self.seconds)))
        return Double(simulation.falsePositives.count) / (Double(size) * Double(self.seconds) / 3600)
    }

    static func parse<T: LosslessStringConvertible>(_ text: String, as: T.Type, name: String) throws -> [T] {
        try text.split(separator: ",").map {
            guard let value = T(String($0).trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("\(name): \"\($0)\" is not a number")
            }
            return value
        }
    }

    static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        return sorted.count % 2 == 1
            ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    static func format(_ value: Double, digits: Int) -> String {
        String(format: "%.\(digits)f", value)
    }
}
