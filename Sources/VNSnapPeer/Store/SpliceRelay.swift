import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import VNSnapCore
import VNSnapCrypto

/// A relay's TCP endpoint for store streams across domains (DESIGN §10): a peer outside a store's NAT connects
/// here and names the store (`SpliceTicket.open`); the relay asks the store, through membership, to dial back
/// (`dial`); the store connects and names the token (`answer`); the relay joins the two connections and copies
/// frames both ways without opening them (the store protocol seals them end to end).
public final class SpliceRelay: Service, Sendable {
    typealias Connection = NIOAsyncChannel<ByteBuffer, ByteBuffer>
    typealias Inbound = NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    typealias Outbound = NIOAsyncChannelOutboundWriter<ByteBuffer>

    /// Splices open at once, at most (each holds two connections).
    static let maximumOpen = 64
    /// How long an opener waits for the store to dial back.
    static let answerTimeout = Duration.seconds(10)
    /// How long a new connection may take to send its ticket, seconds.
    static let ticketSeconds: Int64 = 5

    /// What `status` shows.
    public struct Status: Sendable, Codable, Hashable {
        /// Where peers reach it.
        public var address: String
        /// Splices joined, refused, open now; bytes copied both ways.
        public var joined: UInt64
        public var refused: UInt64
        public var open: Int
        public var bytes: UInt64
    }

    /// One end of a splice as the other end's task needs it: where to write, and what to close when done. Each
    /// task copies its own connection's frames to the other's writer (an iterator stays with its task).
    private struct End: Sendable {
        var outbound: Outbound
        var channel: any Channel
    }

    /// The store's end, handed to the opener's task, with the way to hand the opener's end back.
    private struct Answer: Sendable {
        var end: End
        var opener: CheckedContinuation<End, Never>
    }

    private struct State {
        var waiting: [[UInt8]: (store: PeerID, resume: CheckedContinuation<Answer?, Never>)] = [:]
        var status: Status
    }

    private let server: NIOAsyncChannel<Connection, Never>
    private let state: NIOLockedValueBox<State>
    private let tickets: @Sendable () -> TunnelCrypto
    private let dial: @Sendable (_ store: PeerID, _ token: [UInt8], _ port: Int) async -> String?
    private let logger: Logger
    /// Where it listens.
    public let address: SocketAddress

    /// The relay's splice port: three above its tunnel port (the store's is two above).
    public static func port(tunnelPort: Int) -> Int { tunnelPort + 3 }

    /// Listens at `host:port`; `dial` asks a store to dial back (returns why not, or `nil` once asked).
    public static func bind(
        host: String,
        port: Int,
        tickets: @escaping @Sendable () -> TunnelCrypto,
        dial: @escaping @Sendable (_ store: PeerID, _ token: [UInt8], _ port: Int) async -> String?,
        logger: Logger
    ) async throws -> SpliceRelay {
        let server = try await StoreServer.listen(host: host, port: port)
        return SpliceRelay(server: server, tickets: tickets, dial: dial, logger: logger)
    }

    private init(
        server: NIOAsyncChannel<Connection, Never>,
        tickets: @escaping @Sendable () -> TunnelCrypto,
        dial: @escaping @Sendable (PeerID, [UInt8], Int) async -> String?,
        logger: Logger
    ) {
        self.server = server
        self.tickets = tickets
        self.dial = dial
        self.logger = logger
        // !-safe: a bound channel has a local address.
        self.address = server.channel.localAddress!
        self.state = NIOLockedValueBox(
            State(status: Status(address: "\(server.channel.localAddress!)", joined: 0, refused: 0, open: 0, bytes: 0))
        )
    }

    /// Counters for `status`.
    public var status: Status { self.state.withLockedValue { $0.status } }

    /// Serves connections until graceful shutdown, then ends the splices still open.
    public func run() async throws {
        let channel = self.server.channel
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await self.server.executeThenClose { connections in
                    for try await connection in connections {
                        group.addTask { await self.serve(connection) }
                    }
                }
                group.cancelAll()
            }
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }

    /// Closes the listener (what is spliced runs to its end).
    public func close() async {
        try? await self.server.channel.close()
    }

    private func serve(_ connection: Connection) async {
        let remote = connection.channel.remoteAddress.map { "\($0)" } ?? "unknown"
        do {
            try await connection.executeThenClose { inbound, outbound in
                var iterator = inbound.makeAsyncIterator()
                // A connection that names nothing is closed, not kept.
                let channel = connection.channel
                let timer = channel.eventLoop.scheduleTask(in: .seconds(Self.ticketSeconds)) {
                    channel.close(promise: nil)
                }
                let first = try await iterator.next()
                timer.cancel()
                guard let first else { return }
                let ticket = try SpliceTicket.decode(Array(first.readableBytesView), crypto: self.tickets())
                let end = End(outbound: outbound, channel: channel)
                switch ticket.role {
                case .open: try await self.open(ticket, inbound: iterator, end: end)
                case .answer: await self.answer(ticket, inbound: iterator, end: end)
                }
            }
        } catch {
            self.logger.info(
                "Splice connection ended",
                metadata: ["splice.remote": "\(remote)", "splice.error": "\(error)"]
            )
        }
    }

    private func open(_ ticket: SpliceTicket, inbound: Inbound, end: End) async throws {
        // Splices waiting for their store count too, so openers cannot pile up; a token already waiting (a replayed
        // ticket) is refused rather than put in the first one's place.
        let (full, taken) = self.state.withLockedValue {
            ($0.status.open + $0.waiting.count >= Self.maximumOpen, $0.waiting[ticket.token] != nil)
        }
        if full { return try await self.refuse("the relay joins \(Self.maximumOpen) streams already", end.outbound) }
        if taken { return try await self.refuse("this splice token is already waiting", end.outbound) }
        if let reason = await self.dial(ticket.to, ticket.token, self.address.port ?? 0) {
            return try await self.refuse(reason, end.outbound)
        }
        let store = ticket.to
        let token = ticket.token
        let answer: Answer? = await withCheckedContinuation { resume in
            let placed = self.state.withLockedValue { state in
                guard state.waiting[token] == nil else { return false }
                state.waiting[token] = (store, resume)
                return true
            }
            guard placed else { return resume.resume(returning: nil) }
            Task {
                try? await Task.sleep(for: Self.answerTimeout)
                self.state.withLockedValue { $0.waiting.removeValue(forKey: token) }?.resume.resume(returning: nil)
            }
        }
        guard let answer else {
            return try await self.refuse("store \(store) did not dial back within \(Self.answerTimeout)", end.outbound)
        }
        self.state.withLockedValue {
            $0.status.joined += 1
            $0.status.open += 1
        }
        self.logger.info("Splice joined", metadata: ["splice.opener": "\(ticket.from)", "splice.store": "\(store)"])
        try? await end.outbound.write(ByteBuffer(bytes: SpliceAnswer.joined.bytes))
        answer.opener.resume(returning: end)
        await self.copy(inbound, to: answer.end)
        self.state.withLockedValue { $0.status.open -= 1 }
    }

    private func answer(_ ticket: SpliceTicket, inbound: Inbound, end: End) async {
        let waiter = self.state.withLockedValue { state in
            // Only the store the opener named may answer its token.
            state.waiting[ticket.token]?.store == ticket.from ? state.waiting.removeValue(forKey: ticket.token) : nil
        }
        guard let waiter else { return }
        let opener = await withCheckedContinuation { (opener: CheckedContinuation<End, Never>) in
            waiter.resume.resume(returning: Answer(end: end, opener: opener))
        }
        await self.copy(inbound, to: opener)
    }

    private func refuse(_ reason: String, _ outbound: Outbound) async throws {
        self.state.withLockedValue { $0.status.refused += 1 }
        self.logger.info("Splice refused", metadata: ["splice.reason": "\(reason)"])
        try await outbound.write(ByteBuffer(bytes: SpliceAnswer.refused(reason).bytes))
    }

    /// Copies one connection's frames to the other end until either closes, then closes the other end (whose own
    /// copy then ends too).
    private func copy(_ from: Inbound, to end: End) async {
        var from = from
        do {
            while let frame = try await from.next() {
                let count = UInt64(frame.readableBytes)
                try await end.outbound.write(frame)
                self.state.withLockedValue { $0.status.bytes += count }
            }
        } catch {
            // either side gone: the splice ends
        }
        try? await end.channel.close()
    }
}
