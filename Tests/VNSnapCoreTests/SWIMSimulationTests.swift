import Testing
import VNSnapCore

/// Many members on a simulated lossy network (R16 tier 3): the protocol as a whole, in simulated time.
@Suite struct SWIMSimulationTests {
    @Test func test_1000Members_oneCrashes_everyOtherMemberMarksItDead() {
        var configuration = SWIMSimulation.Configuration(members: 1000)
        configuration.seed = 11
        let simulation = SWIMSimulation(configuration)
        simulation.run(until: SimInstant.zero.advanced(by: .seconds(5)))
        simulation.crash(123)
        var detectedAt: SimInstant?
        for second in 6...60 {
            simulation.run(until: SimInstant.zero.advanced(by: .seconds(second)))
            if simulation.allSeeDead(123) {
                detectedAt = simulation.now
                break
            }
        }
        #expect(detectedAt != nil, "not every member marked the crashed one dead within 55 s")
        #expect(simulation.falsePositives.isEmpty, "\(simulation.falsePositives.prefix(5))")
    }

    /// About 100 s of CPU in a debug build: the largest simulation in the suite.
    @Test func test_1000Members_10PercentLoss_noCrash_nobodyDeclaredDeadIn10Minutes() {
        var configuration = SWIMSimulation.Configuration(members: 1000)
        configuration.loss = 0.10
        configuration.seed = 12
        let simulation = SWIMSimulation(configuration)
        simulation.run(until: SimInstant.zero.advanced(by: .seconds(600)))
        #expect(
            simulation.falsePositives.isEmpty,
            "\(simulation.falsePositives.count) false positives, first: \(simulation.falsePositives.prefix(3))"
        )
    }

    @Test func test_smallCluster_leave_othersMarkLeftAtOnce() {
        let simulation = SWIMSimulation(SWIMSimulation.Configuration(members: 20))
        simulation.run(until: SimInstant.zero.advanced(by: .seconds(3)))
        simulation.leave(7)
        simulation.run(until: SimInstant.zero.advanced(by: .seconds(6)))
        for observer in 0..<20 where observer != 7 {
            #expect(simulation.status(of: 7, seenBy: observer) == .left, "member \(observer)")
        }
        #expect(simulation.falsePositives.isEmpty)
    }

    @Test func test_smallCluster_oneCrashes_countersShowProbesSuspicionsAndDeaths() {
        let simulation = SWIMSimulation(SWIMSimulation.Configuration(members: 8))
        simulation.run(until: SimInstant.zero.advanced(by: .seconds(5)))
        let quiet = simulation.instances.map(\.counters)
        #expect(quiet.allSatisfy { $0.probes > 0 && $0.suspicions == 0 && $0.declaredDead == 0 }, "\(quiet)")
        simulation.crash(3)
        simulation.run(until: SimInstant.zero.advanced(by: .seconds(40)))
        let survivors = simulation.instances.indices.filter { $0 != 3 }.map { simulation.instances[$0].counters }
        #expect(survivors.allSatisfy { $0.suspicions >= 1 }, "\(survivors)")
        #expect(survivors.reduce(0) { $0 + $1.declaredDead } >= 1)
        #expect(survivors.reduce(0) { $0 + $1.indirectProbes } >= 1)
        #expect(survivors.allSatisfy { $0.refutations == 0 })
    }
}
