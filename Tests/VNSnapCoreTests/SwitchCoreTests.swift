import Testing
import VNSnapCore

@Suite struct SwitchCoreTests {
    let vniA = VNI(100)!
    let vniB = VNI(200)!
    let macA1 = MACAddress("52:54:00:00:00:a1")!
    let macA2 = MACAddress("52:54:00:00:00:a2")!
    let macB1 = MACAddress("52:54:00:00:00:b1")!
    let remote = MACAddress("52:54:00:00:00:99")!
    let peer = PeerID(name: "h2")
    let otherPeer = PeerID(name: "h3")

    private func makeSwitch() -> SwitchCore<TestInstant> {
        var core = SwitchCore<TestInstant>(ageingTime: .seconds(300))
        core.addPort(PortID(0), vni: self.vniA)
        core.addPort(PortID(1), vni: self.vniA)
        core.addPort(PortID(2), vni: self.vniB)
        return core
    }

    @Test func test_forward_unknownUnicastFromPort_shouldFloodOwnVNIAndTunnels() {
        var core = self.makeSwitch()
        let decision = core.forward(destination: self.macA2, source: self.macA1, from: .port(PortID(0)), now: .zero)
        #expect(decision == .flood(self.vniA, excluding: PortID(0), tunnels: true))
        #expect(core.ports(in: self.vniA) == [PortID(0), PortID(1)])
    }

    @Test func test_forward_afterLearning_shouldUnicastToPort() {
        var core = self.makeSwitch()
        _ = core.forward(destination: .broadcast, source: self.macA2, from: .port(PortID(1)), now: .zero)
        let decision = core.forward(destination: self.macA2, source: self.macA1, from: .port(PortID(0)), now: .zero)
        #expect(decision == .port(PortID(1)))
    }

    @Test func test_forward_learnedInOtherVNI_shouldNotLeakAcrossVNIs() {
        var core = self.makeSwitch()
        _ = core.forward(destination: .broadcast, source: self.macB1, from: .port(PortID(2)), now: .zero)
        // The same MAC looked up from VNI A is unknown: flood within A only, never to port 2.
        let decision = core.forward(destination: self.macB1, source: self.macA1, from: .port(PortID(0)), now: .zero)
        #expect(decision == .flood(self.vniA, excluding: PortID(0), tunnels: true))
        #expect(!core.ports(in: self.vniA).contains(PortID(2)))
    }

    @Test func test_forward_broadcastFromTunnel_shouldFloodLocalPortsOnly() {
        var core = self.makeSwitch()
        let decision = core.forward(
            destination: .broadcast,
            source: self.remote,
            from: .tunnel(self.peer, self.vniA),
            now: .zero
        )
        #expect(decision == .flood(self.vniA, excluding: nil, tunnels: false))
    }

    @Test func test_forward_fromTunnelForVNIWithoutLocalPorts_shouldDropUnknownVNI() {
        var core = self.makeSwitch()
        let decision = core.forward(
            destination: .broadcast,
            source: self.remote,
            from: .tunnel(self.peer, VNI(300)!),
            now: .zero
        )
        #expect(decision == .drop(.unknownVNI))
    }

    @Test func test_forward_toAddressLearnedBehindTunnel_shouldUseTunnel() {
        var core = self.makeSwitch()
        _ = core.forward(destination: .broadcast, source: self.remote, from: .tunnel(self.peer, self.vniA), now: .zero)
        let decision = core.forward(destination: self.remote, source: self.macA1, from: .port(PortID(0)), now: .zero)
        #expect(decision == .tunnel(self.peer))
    }

    @Test func test_forward_fromTunnelToAddressBehindAnotherTunnel_shouldDropNotLocal() {
        var core = self.makeSwitch()
        _ = core.forward(
            destination: .broadcast,
            source: self.remote,
            from: .tunnel(self.otherPeer, self.vniA),
            now: .zero
        )
        let decision = core.forward(
            destination: self.remote,
            source: self.macA1,
            from: .tunnel(self.peer, self.vniA),
            now: .zero
        )
        #expect(decision == .drop(.notLocal))
    }

    @Test func test_forward_toOwnPort_shouldDropHairpin() {
        var core = self.makeSwitch()
        _ = core.forward(destination: .broadcast, source: self.macA1, from: .port(PortID(0)), now: .zero)
        let decision = core.forward(destination: self.macA1, source: self.macA2, from: .port(PortID(0)), now: .zero)
        #expect(decision == .drop(.hairpin))
    }

    @Test func test_forward_afterAgeingTime_shouldForgetAndFlood() {
        var core = self.makeSwitch()
        _ = core.forward(destination: .broadcast, source: self.macA2, from: .port(PortID(1)), now: .zero)
        let later = TestInstant.zero.advanced(by: .seconds(299))
        #expect(
            step(&core) {
                $0.forward(destination: self.macA2, source: self.macA1, from: .port(PortID(0)), now: later)
                    == .port(PortID(1))
            }
        )
        let expired = TestInstant.zero.advanced(by: .seconds(301))
        #expect(
            core.forward(destination: self.macA2, source: self.macA1, from: .port(PortID(0)), now: expired)
                == .flood(self.vniA, excluding: PortID(0), tunnels: true)
        )
        // macA1 was refreshed at 299 s and 301 s, so one sweep at 400 s removes macA2 only... then macA1 at 700 s.
        #expect(core.expire(now: TestInstant.zero.advanced(by: .seconds(400))) == 1)
        #expect(core.expire(now: TestInstant.zero.advanced(by: .seconds(700))) == 1)
    }

    @Test func test_learn_multicastSource_shouldNotBeLearned() {
        var table = ForwardingTable<TestInstant>()
        table.learn(.broadcast, at: .port(PortID(0)), now: .zero)
        #expect(table.count == 0)
    }

    @Test func test_learn_whenFull_shouldKeepExistingAndRefuseNew() {
        var table = ForwardingTable<TestInstant>(ageingTime: .seconds(10), capacity: 2)
        table.learn(self.macA1, at: .port(PortID(0)), now: .zero)
        table.learn(self.macA2, at: .port(PortID(0)), now: .zero)
        table.learn(self.macB1, at: .port(PortID(0)), now: .zero)
        #expect(table.count == 2)
        #expect(table.lookup(self.macB1, now: .zero) == nil)
        // Once the old ones age out there is room again.
        table.learn(self.macB1, at: .port(PortID(0)), now: TestInstant.zero.advanced(by: .seconds(11)))
        #expect(table.lookup(self.macB1, now: TestInstant.zero.advanced(by: .seconds(11))) == .port(PortID(0)))
    }

    @Test func test_removePort_shouldForgetItsAddresses() {
        var core = self.makeSwitch()
        _ = core.forward(destination: .broadcast, source: self.macA2, from: .port(PortID(1)), now: .zero)
        core.removePort(PortID(1))
        #expect(core.ports(in: self.vniA) == [PortID(0)])
        #expect(
            core.forward(destination: self.macA2, source: self.macA1, from: .port(PortID(0)), now: .zero)
                == .flood(self.vniA, excluding: PortID(0), tunnels: true)
        )
    }

    @Test func test_frameAddresses_runt_shouldBeNil() {
        let runt = [UInt8](repeating: 0xff, count: 13)
        #expect(runt.withUnsafeBytes { EthernetFrame.addresses(of: $0) } == nil)
    }
}
