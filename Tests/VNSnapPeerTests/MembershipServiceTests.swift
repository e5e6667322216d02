import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing
import VNSnapCore
import VNSnapCrypto
import VNSnapPeer

/// Membership services in this process on loopback with real sealed UDP: join through a seed, tunnel events,
/// one initiator, a cluster-wide key change written to every keyring file, and a graceful leave.
@Suite struct MembershipServiceTests {
    /// A free UDP port on 127.0.0.1 (bound and released; the tiny race is acceptable in a test).
    static func freePort() async throws -> Int {
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress!.port!
        try await channel.close()
        return port
    }

    final class Events: Sendable {
        let list = Mutex<[MembershipEvent]>([])
    }

    struct Node {
        var service: MembershipService
        var task: Task<Void, any Error>
        var events: Events
        var keyringPath: String
    }

    static func start(
        _ name: String,
        port: Int,
        seeds: [Int],
        keyring: Keyring,
        directory: String
    ) async throws -> Node {
        var settings = SWIMSettings()
        settings.probeInterval = .milliseconds(200)
        settings.probeTimeout = .milliseconds(100)
        settings.gossipInterval = .milliseconds(50)
        let keyringPath = "\(directory)/\(name).keyring"
        try keyring.fileText.write(toFile: keyringPath, atomically: true, encoding: .utf8)
        let me = MemberState(
            id: PeerID(name: name),
            name: name,
            address: "127.0.0.1:\(port)",
            incarnation: 0,
            status: .alive,
            metadata: MemberMetadata(
                roles: [.vm],
                tunnelAddress: "127.0.0.1:\(port + 1)",
                storeCapacity: 0,
                version: "test"
            )
        )
        var configuration = MembershipService.Configuration(
            me: me,
            settings: settings,
            bind: HostPort(host: "127.0.0.1", port: port),
            seeds: seeds.map { "127.0.0.1:\($0)" },
            clusterName: "in-process",
            session: 1,
            keyring: keyring,
            keyringPath: keyringPath,
            termStore: TermStore(path: "\(directory)/\(name).term")
        )
        configuration.leaveLinger = .milliseconds(300)
        let events = Events()
        let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let service = try await MembershipService.start(configuration, logger: quiet) { event in
            events.list.withLock { $0.append(event) }
        }
        let task = Task { try await service.run() }
        return Node(service: service, task: task, events: events, keyringPath: keyringPath)
    }

    @Test func test_threeServices_joinThroughOneSeed_agree_changeKeysEverywhere_andLeave() async throws {
        let directory = NSTemporaryDirectory() + "vnsnap-membership-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let keyring = Keyring(keys: [SecretKey.generate()])!
        let ports = [try await Self.freePort(), try await Self.freePort(), try await Self.freePort()]
        var nodes: [Node] = []
        nodes.append(try await Self.start("a", port: ports[0], seeds: [], keyring: keyring, directory: directory))
        nodes.append(
            try await Self.start("b", port: ports[1], seeds: [ports[0]], keyring: keyring, directory: directory)
        )
        nodes.append(
            try await Self.start("c", port: ports[2], seeds: [ports[0]], keyring: keyring, directory: directory)
        )
        defer { for node in nodes { node.task.cancel() } }

        // Everyone sees everyone alive and names the same initiator.
        let agreed = try await eventually(timeout: .seconds(15)) {
            var initiators: Set<String?> = []
            for node in nodes {
                let status = try await node.service.status()
                guard status.members.filter({ $0.state == "alive" }).count == 3 else { return false }
                initiators.insert(status.election.initiator)
            }
            return initiators.count == 1 && initiators.first! != nil
        }
        #expect(agreed)
        // Tunnels follow membership: a learnt of b's and c's tunnel addresses.
        let ups: [MembershipEvent] = [
            .memberUp(name: "b", tunnel: "127.0.0.1:\(ports[1] + 1)"),
            .memberUp(name: "c", tunnel: "127.0.0.1:\(ports[2] + 1)"),
        ]
        #expect(await eventually { Set(nodes[0].events.list.withLock { $0 }).isSuperset(of: ups) })

        // A key installed on c reaches a and b, and is written to their keyring files.
        let newKey = SecretKey.generate()
        let changed = try await nodes[2].service.change(.install(base64: newKey.base64))
        #expect(changed.keys == [keyring.primary, newKey])
        let spread = try await eventually(timeout: .seconds(10)) {
            for node in nodes where try await node.service.status().keyring.generation != changed.generation {
                return false
            }
            return true
        }
        #expect(spread)
        for node in nodes {
            let stored = try Keyring.parse(
                String(contentsOfFile: node.keyringPath, encoding: .utf8),
                path: node.keyringPath
            )
            #expect(stored == changed, "\(node.keyringPath)")
        }
        #expect(await eventually { nodes[0].events.list.withLock { $0 }.contains(.keyringChanged(changed)) })

        // c leaves: the others mark it left, and it no longer counts for the majority.
        await nodes[2].service.leave()
        let left = try await eventually(timeout: .seconds(10)) {
            let status = try await nodes[0].service.status()
            return status.members.first { $0.name == "c" }?.state == "left" && status.election.known == 2
        }
        #expect(left)
        // Events reach the daemon through a stream, a moment after the status changes.
        #expect(await eventually { nodes[0].events.list.withLock { $0 }.contains(.memberDown(name: "c")) })
        for node in nodes {
            node.task.cancel()
            _ = await node.task.result
        }
    }
}
