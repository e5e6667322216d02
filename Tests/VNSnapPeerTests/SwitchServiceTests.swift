import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing
import VNSnapCore
import VNSnapCrypto
import VNSnapPeer

/// A stand-in NIC: a unix datagram socket where the switch delivers frames, and from which frames are sent.
final class TestNIC: Sendable {
    let channel: any Channel
    let received = Received()

    init(path: String) async throws {
        let received = self.received
        self.channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Collector(received: received))
                }
            }
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
    }

    func send(_ frame: [UInt8], to switchSocket: String) async throws {
        let envelope = AddressedEnvelope(
            remoteAddress: try SocketAddress(unixDomainSocketPath: switchSocket),
            data: ByteBuffer(bytes: frame)
        )
        try await self.channel.writeAndFlush(envelope)
    }

    var frames: [[UInt8]] { self.received.frames.withLock { $0 } }

    final class Received: Sendable {
        let frames = Mutex<[[UInt8]]>([])
    }

    func close() async { try? await self.channel.close() }

    /// Files each datagram it reads.
    final class Collector: ChannelInboundHandler {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let received: Received
        init(received: Received) { self.received = received }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = Array(buffer: Self.unwrapInboundIn(data).data)
            self.received.frames.withLock { $0.append(bytes) }
        }
    }
}

/// Polls `condition` until it holds or `timeout` passes (the network is real, so delivery takes a moment).
func eventually(timeout: Duration = .seconds(5), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return try await condition()
}

func ethernetFrame(to destination: String, from source: String, payload: String) -> [UInt8] {
    func bytes(_ mac: String) -> [UInt8] { mac.split(separator: ":").map { UInt8($0, radix: 16)! } }
    return bytes(destination) + bytes(source) + [0x88, 0xb5] + Array(payload.utf8)
}

/// Two real switches on loopback UDP, each with VM ports on two VIOLINs, and stand-in NICs.
final class TwoSwitches {
    let directory: String
    let net1 = Violin(name: "net1", vni: VNI(101)!)
    let net2 = Violin(name: "net2", vni: VNI(102)!)
    let keyring = Keyring(keys: [SecretKey.generate()])!
    /// Each switch's key pair, as the daemon makes one per run: tunnels are sealed with pair keys.
    let exchanges = ["h1": ExchangeKeyPair.generate(), "h2": ExchangeKeyPair.generate()]
    var switches: [String: SwitchService] = [:]
    var nics: [String: TestNIC] = [:]

    init() throws {
        self.directory = "/tmp/vnsnap-sw-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
    }

    func switchSocket(_ vm: String) -> String { "\(self.directory)/\(vm).port" }

    func start() async throws {
        let layout: [String: [(String, Violin)]] = [
            "h1": [("a1", net1), ("b1", net2)], "h2": [("a2", net1), ("b2", net2)],
        ]
        for peer in ["h1", "h2"] {
            var ports: [SwitchService.PortSpec] = []
            for (vm, violin) in layout[peer]! {
                let nicPath = "\(self.directory)/\(vm).nic"
                self.nics[vm] = try await TestNIC(path: nicPath)
                ports.append(.init(vm: vm, violin: violin, switchSocket: self.switchSocket(vm), vmSocket: nicPath))
            }
            self.switches[peer] = try await SwitchService.start(
                me: peer,
                bind: HostPort(host: "127.0.0.1", port: 0),
                crypto: TunnelCrypto(keyring: self.keyring, clusterName: "test"),
                exchange: self.exchanges[peer],
                violins: [net1, net2],
                ports: ports,
                tunnels: [],
                session: UInt64(Date().timeIntervalSince1970 * 1e9),
                logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
            )
        }
        let h1 = self.switches["h1"]!
        let h2 = self.switches["h2"]!
        try await h1.addTunnel(
            .init(
                name: "h2",
                address: HostPort(host: "127.0.0.1", port: h2.tunnelAddress.port!),
                exchangeKey: self.exchanges["h2"]!.publicKey
            )
        )
        try await h2.addTunnel(
            .init(
                name: "h1",
                address: HostPort(host: "127.0.0.1", port: h1.tunnelAddress.port!),
                exchangeKey: self.exchanges["h1"]!.publicKey
            )
        )
    }

    func stop() async {
        for nic in self.nics.values { await nic.close() }
        for sw in self.switches.values { await sw.close() }
        try? FileManager.default.removeItem(atPath: self.directory)
    }
}

@Suite(.serialized) struct SwitchServiceTests {
    static let a1 = "52:54:00:00:01:01", a2 = "52:54:00:00:01:02", b1 = "52:54:00:00:02:01", b2 = "52:54:00:00:02:02"

    @Test func test_broadcastFromPort_shouldReachSameVIOLINAcrossTunnel_andNeverTheOtherVIOLIN() async throws {
        let net = try TwoSwitches()
        do {
            try await net.start()
            try await net.nics["a1"]!.send(
                ethernetFrame(to: "ff:ff:ff:ff:ff:ff", from: Self.a1, payload: "hello"),
                to: net.switchSocket("a1")
            )
            #expect(await eventually { net.nics["a2"]!.frames.count == 1 })
            // Unicast back, now that a1 is learned on h2 and a2 on... nothing yet: floods, then learns.
            try await net.nics["a2"]!.send(
                ethernetFrame(to: Self.a1, from: Self.a2, payload: "reply"),
                to: net.switchSocket("a2")
            )
            #expect(await eventually { net.nics["a1"]!.frames.count == 1 })
            #expect(net.nics["a1"]!.frames.first.map { String(decoding: $0[14...], as: UTF8.self) } == "reply")
            try await Task.sleep(for: .milliseconds(100))
            #expect(net.nics["b1"]!.frames.isEmpty)
            #expect(net.nics["b2"]!.frames.isEmpty)
            let status = try await net.switches["h2"]!.status()
            #expect(status.tunnels.first?.counters.rxFrames == 1)
            #expect(status.tunnels.first?.counters.txFrames == 1)
            #expect(status.learned["net1"] == 2)
            #expect(status.learned["net2"] == nil || status.learned["net2"] == 0)
        } catch {
            Issue.record("\(error)")
        }
        await net.stop()
    }

    @Test func test_datagramsFromWrongKeyGarbageAndReplays_shouldBeDroppedAndCounted_andTrafficStillFlows() async throws
    {
        let net = try TwoSwitches()
        do {
            try await net.start()
            let h2 = net.switches["h2"]!
            let target = try SocketAddress(ipAddress: "127.0.0.1", port: h2.tunnelAddress.port!)
            let attacker = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .bind(host: "127.0.0.1", port: 0).get()
            defer { attacker.close(promise: nil) }

            // 1) Sealed under a key h2 does not have.
            var wrongKey = TunnelCrypto(keyring: Keyring(keys: [SecretKey.generate()])!, clusterName: "test")
            // 2) Right key, other cluster name.
            var otherCluster = TunnelCrypto(keyring: net.keyring, clusterName: "other")
            // 3) The cluster's key alone, as a relay holds it: not the pair's, so forged.
            var clusterOnly = TunnelCrypto(keyring: net.keyring, clusterName: "test")
            // 4) The pair's keys: a valid datagram, then replayed.
            var right = try #require(clusterOnly.paired(net.exchanges["h1"]!, with: net.exchanges["h2"]!.publicKey))
            func header(_ sequence: UInt64) -> TunnelHeader {
                TunnelHeader(
                    kind: .frame,
                    vni: net.net1.vni,
                    source: PeerID(name: "h1"),
                    destination: PeerID(name: "h2"),
                    session: 1,
                    epoch: 0,
                    keyID: 0,
                    sequence: sequence
                )
            }
            let frame = ethernetFrame(to: "ff:ff:ff:ff:ff:ff", from: "52:54:00:00:09:09", payload: "forged")
            var datagrams: [[UInt8]] = []
            for s in 0..<50 { datagrams.append(wrongKey.sealed(header: header(UInt64(s)), payload: frame)) }
            for s in 0..<30 { datagrams.append(otherCluster.sealed(header: header(UInt64(s)), payload: frame)) }
            for s in 0..<10 { datagrams.append(clusterOnly.sealed(header: header(UInt64(s)), payload: frame)) }
            let valid = right.sealed(header: header(1), payload: frame)
            datagrams.append(valid)
            datagrams += Array(repeating: valid, count: 20)
            var rng = SystemRandomNumberGenerator()
            for i in 0..<1000 {
                let length = i % 2 == 0 ? Int.random(in: 0..<64, using: &rng) : Int.random(in: 64..<1600, using: &rng)
                datagrams.append((0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) })
            }
            for datagram in datagrams {
                attacker.write(
                    AddressedEnvelope(remoteAddress: target, data: ByteBuffer(bytes: datagram)),
                    promise: nil
                )
            }
            try await attacker.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: ByteBuffer(bytes: [1])))

            let expectedRejected = 50 + 30 + 10 + 1000 + 1
            #expect(
                try await eventually {
                    let status = try await h2.status()
                    return status.rejected.values.reduce(0, +) + (status.tunnels.first?.counters.totalDrops ?? 0)
                        >= UInt64(expectedRejected + 20)
                }
            )
            let status = try await h2.status()
            #expect(status.rejected[.unknownKey] == 50)
            #expect(status.rejected[.badTag, default: 0] + (status.tunnels.first?.counters.drops[.badTag] ?? 0) >= 40)
            #expect(status.tunnels.first?.endToEnd == true)
            #expect(status.tunnels.first?.counters.drops[.replayed] == 20)
            #expect(status.tunnels.first?.counters.rxFrames == 1)

            // The real tunnel still works: h1's session is newer than the injected session 1, so its datagrams
            // restart the replay window, as after a restart of h1.
            try await net.nics["a1"]!.send(
                ethernetFrame(to: "ff:ff:ff:ff:ff:ff", from: Self.a1, payload: "x"),
                to: net.switchSocket("a1")
            )
            #expect(
                await eventually {
                    net.nics["a2"]!.frames.contains { String(decoding: $0[14...], as: UTF8.self) == "x" }
                }
            )
        } catch {
            Issue.record("\(error)")
        }
        await net.stop()
    }

    /// A VM restarts (a new socket at the same path): after `vmStarted` the port talks to the new one both ways.
    @Test func test_vmRestart_afterVMStarted_shouldDeliverBothWaysToTheNewSocket() async throws {
        let net = try TwoSwitches()
        do {
            try await net.start()
            try await net.nics["a1"]!.send(
                ethernetFrame(to: "ff:ff:ff:ff:ff:ff", from: Self.a1, payload: "one"),
                to: net.switchSocket("a1")
            )
            #expect(await eventually { net.nics["a2"]!.frames.count == 1 })

            // Restart a2: close its socket, bind a new one at the same path, tell the switch.
            await net.nics["a2"]!.close()
            net.nics["a2"] = try await TestNIC(path: "\(net.directory)/a2.nic")
            await net.switches["h2"]!.vmStarted("a2")

            try await net.nics["a2"]!.send(
                ethernetFrame(to: Self.a1, from: Self.a2, payload: "from new a2"),
                to: net.switchSocket("a2")
            )
            #expect(
                await eventually {
                    net.nics["a1"]!.frames.contains { String(decoding: $0[14...], as: UTF8.self) == "from new a2" }
                }
            )
            try await net.nics["a1"]!.send(
                ethernetFrame(to: Self.a2, from: Self.a1, payload: "to new a2"),
                to: net.switchSocket("a1")
            )
            #expect(
                await eventually {
                    net.nics["a2"]!.frames.contains { String(decoding: $0[14...], as: UTF8.self) == "to new a2" }
                }
            )
        } catch {
            Issue.record("\(error)")
        }
        await net.stop()
    }

    /// A burst larger than a unix socket's datagram queue reaches a slow reader without loss.
    @Test func test_burstLargerThanSocketQueue_shouldBeDeliveredWithoutDrops() async throws {
        let net = try TwoSwitches()
        do {
            try await net.start()
            // Let each switch learn/connect its ports first.
            try await net.nics["a2"]!.send(
                ethernetFrame(to: "ff:ff:ff:ff:ff:ff", from: Self.a2, payload: "hi"),
                to: net.switchSocket("a2")
            )
            #expect(await eventually { net.nics["a1"]!.frames.count == 1 })
            for i in 0..<400 {
                try await net.nics["a1"]!.send(
                    ethernetFrame(to: Self.a2, from: Self.a1, payload: "burst \(i)"),
                    to: net.switchSocket("a1")
                )
            }
            #expect(await eventually { net.nics["a2"]!.frames.count == 400 })
            let status = try await net.switches["h2"]!.status()
            #expect(status.ports.first { $0.vm == "a2" }?.counters.drops.isEmpty == true)
        } catch {
            Issue.record("\(error)")
        }
        await net.stop()
    }
}
