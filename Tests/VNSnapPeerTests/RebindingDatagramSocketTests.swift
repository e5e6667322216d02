import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing
import VNSnapCore

@testable import VNSnapPeer

/// A socket that NIO closes after a failed send is bound again to the same port and receives again; one closed on
/// purpose stays closed.
@Suite struct RebindingDatagramSocketTests {
    /// What the test's sockets saw: each channel handed over, and each datagram received.
    final class Record: Sendable {
        let channels = Mutex<[any Channel]>([])
        let received = TestNIC.Received()

        var texts: [String] { self.received.frames.withLock { $0.map { String(decoding: $0, as: UTF8.self) } } }
    }

    static func bind(_ record: Record, loop: any EventLoop) async throws -> RebindingDatagramSocket {
        try await RebindingDatagramSocket.bind(
            "test",
            at: HostPort(host: "127.0.0.1", port: 0),
            loop: loop,
            logger: Logger(label: "test"),
            bootstrap: DatagramBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(TestNIC.Collector(received: record.received))
                    }
                },
            attach: { channel in record.channels.withLock { $0.append(channel) } }
        )
    }

    static func waitFor(_ what: String, _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(15)
        while !condition() {
            guard ContinuousClock.now < deadline else { throw Shell.Failure(description: "not \(what) in 15 s") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    @Test func test_sendFailsFatally_socketIsBoundAgainToItsPort_andReceivesAgain() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let record = Record()
        let socket = try await Self.bind(record, loop: loop)
        let sender = try await DatagramBootstrap(group: loop).bind(host: "127.0.0.1", port: 0).get()
        defer { sender.close(promise: nil) }

        try await sender.writeAndFlush(
            AddressedEnvelope(remoteAddress: socket.localAddress, data: ByteBuffer(string: "before"))
        )
        try await Self.waitFor("receiving before") { record.texts == ["before"] }

        // A broadcast without SO_BROADCAST fails with EACCES: NIO closes the channel, as it does on EPERM from a
        // firewall's drop.
        let first = try #require(record.channels.withLock { $0.first })
        let broadcast = try SocketAddress(ipAddress: "255.255.255.255", port: 9)
        first.writeAndFlush(AddressedEnvelope(remoteAddress: broadcast, data: ByteBuffer(string: "x")), promise: nil)
        try await first.closeFuture.get()

        try await Self.waitFor("bound again") { record.channels.withLock { $0.count } == 2 }
        let second = try #require(record.channels.withLock { $0.last })
        #expect(second.localAddress == socket.localAddress)
        try await sender.writeAndFlush(
            AddressedEnvelope(remoteAddress: socket.localAddress, data: ByteBuffer(string: "after"))
        )
        try await Self.waitFor("receiving after") { record.texts == ["before", "after"] }

        await socket.close()
        #expect(!second.isActive)
    }

    @Test func test_closedOnPurpose_isNotBoundAgain() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let record = Record()
        let socket = try await Self.bind(record, loop: loop)
        await socket.close()
        let first = try #require(record.channels.withLock { $0.first })
        try await first.closeFuture.get()
        // Longer than the first wait before binding again.
        try await Task.sleep(for: .seconds(1))
        #expect(record.channels.withLock { $0.count } == 1)
    }
}
