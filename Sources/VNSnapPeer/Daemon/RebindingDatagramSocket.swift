import Logging
import NIOCore
import NIOPosix
import VNSnapCore

/// A UDP socket kept bound while the peer runs: when it closes under the peer it is bound again, to the same address.
///
/// NIO closes a datagram channel on any send error but EMSGSIZE and EHOSTUNREACH. A local firewall's drop (EPERM)
/// or a lost route (ENETUNREACH) would otherwise take the socket, and the peer with it, off the network for good:
/// tools/chaos found peers cut off by a partition of a few seconds that never came back once it healed.
final class RebindingDatagramSocket: Sendable {
    /// First wait before binding again; doubled for each close in a row, up to `longestWait`.
    static let firstWait = TimeAmount.milliseconds(500)
    /// Longest wait before binding again: how long a healed network may wait for the socket to come back.
    static let longestWait = TimeAmount.seconds(4)
    /// A socket open this long has worked: its next close starts a new run of waits.
    static let settled = TimeAmount.seconds(30)

    private struct State {
        var channel: any Channel
        var boundAt: NIODeadline
        var closesInARow = 0
        var stopped = false
    }

    private let name: String
    private let address: SocketAddress
    private let loop: any EventLoop
    private let state: NIOLoopBoundBox<State>
    private let bootstrap: NIOLoopBoundBox<DatagramBootstrap>
    private let attach: @Sendable (any Channel) -> Void
    private let logger: Logger

    /// The address the socket is bound to.
    let localAddress: SocketAddress

    private init(
        name: String,
        channel: any Channel,
        address: SocketAddress,
        loop: any EventLoop,
        bootstrap: NIOLoopBoundBox<DatagramBootstrap>,
        attach: @escaping @Sendable (any Channel) -> Void,
        logger: Logger
    ) {
        self.name = name
        self.address = address
        self.localAddress = channel.localAddress ?? address
        self.loop = loop
        self.state = .makeBoxSendingValue(State(channel: channel, boundAt: .now()), eventLoop: loop)
        self.bootstrap = bootstrap
        self.attach = attach
        self.logger = logger
    }

    /// Binds `address` with `bootstrap` (throwing if it cannot) and hands the channel to `attach`, on `loop`, now
    /// and each time it is bound again. `samePort: false` binds again to any port of the host (for a socket nobody
    /// sends to); `receiveCapacity` sizes the buffer each read takes.
    static func bind(
        _ name: String,
        at address: HostPort,
        samePort: Bool = true,
        receiveCapacity: Int? = nil,
        loop: any EventLoop,
        logger: Logger,
        bootstrap: sending DatagramBootstrap,
        attach: @escaping @Sendable (any Channel) -> Void
    ) async throws -> RebindingDatagramSocket {
        let requested = try SocketAddress.makeAddressResolvingHost(address.host, port: address.port)
        // Binding again to the same address must not wait out the old socket.
        var bootstrap = bootstrap.channelOption(.socketOption(.so_reuseaddr), value: 1)
        if let receiveCapacity {
            bootstrap = bootstrap.channelOption(
                .recvAllocator,
                value: FixedSizeRecvByteBufferAllocator(capacity: receiveCapacity)
            )
        }
        let box = NIOLoopBoundBox.makeBoxSendingValue(bootstrap, eventLoop: loop)
        let channel = try await loop.flatSubmit { box.value.bind(to: requested) }.get()
        var again = channel.localAddress ?? requested
        if !samePort { again.port = 0 }
        let socket = RebindingDatagramSocket(
            name: name,
            channel: channel,
            address: again,
            loop: loop,
            bootstrap: box,
            attach: attach,
            logger: logger
        )
        try await loop.submit {
            attach(channel)
            socket.watch(channel)
        }.get()
        return socket
    }

    /// Stops binding again and closes the socket.
    func close() async {
        let channel = try? await self.loop.submit {
            self.state.value.stopped = true
            return self.state.value.channel
        }.get()
        try? await channel?.close()
    }

    private func watch(_ channel: any Channel) {
        channel.closeFuture.hop(to: self.loop).assumeIsolated().whenComplete { _ in
            self.closed(channel)
        }
    }

    private func closed(_ channel: any Channel) {
        guard !self.state.value.stopped, self.state.value.channel === channel else { return }
        let now = NIODeadline.now()
        if now - self.state.value.boundAt > Self.settled { self.state.value.closesInARow = 0 }
        self.state.value.closesInARow += 1
        let wait = self.wait(afterCloses: self.state.value.closesInARow)
        let metadata: Logger.Metadata = [
            "socket": "\(self.name)", "socket.address": "\(self.address.displayString)",
            "socket.closesInARow": "\(self.state.value.closesInARow)", "socket.wait": "\(wait)",
        ]
        // The first close of a run is news; the rest (a firewall dropping every send) would fill the log.
        if self.state.value.closesInARow == 1 {
            self.logger.warning("Socket closed under the peer (a send failed); binding it again", metadata: metadata)
        } else {
            self.logger.debug("Socket closed again; binding it again", metadata: metadata)
        }
        self.loop.assumeIsolated().scheduleTask(in: wait) { self.rebind() }
    }

    private func rebind() {
        guard !self.state.value.stopped else { return }
        self.bootstrap.value.bind(to: self.address).hop(to: self.loop).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let channel):
                guard !self.state.value.stopped else {
                    channel.close(promise: nil)
                    return
                }
                self.state.value.channel = channel
                self.state.value.boundAt = .now()
                self.attach(channel)
                self.watch(channel)
                self.logger.debug("Socket bound again", metadata: ["socket": "\(self.name)"])
            case .failure(let error):
                self.state.value.closesInARow += 1
                let wait = self.wait(afterCloses: self.state.value.closesInARow)
                self.logger.warning(
                    "Socket could not be bound again; trying later",
                    metadata: [
                        "socket": "\(self.name)", "socket.address": "\(self.address.displayString)",
                        "socket.wait": "\(wait)", "error": "\(error)",
                    ]
                )
                self.loop.assumeIsolated().scheduleTask(in: wait) { self.rebind() }
            }
        }
    }

    private func wait(afterCloses closes: Int) -> TimeAmount {
        let doubled = Self.firstWait.nanoseconds << min(closes - 1, 16)
        return .nanoseconds(min(doubled, Self.longestWait.nanoseconds))
    }
}
