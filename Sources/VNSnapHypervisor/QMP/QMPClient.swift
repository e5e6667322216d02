import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOPosix
import VNSnapCore

import struct Foundation.Data
import class Foundation.JSONEncoder

/// A client of QEMU's machine protocol over its unix socket: greeting, capabilities, commands, events.
///
/// Commands are matched to replies by `id`, so several may be in flight. Events arrive on `events`.
public final class QMPClient: Sendable {
    private let channel: any Channel
    private let handler: NIOLoopBound<QMPHandler>
    /// Every event QEMU sends, in order, until the connection closes.
    public let events: AsyncStream<QMPEvent>
    /// The latest events, so several waiters can look for theirs without sharing the stream.
    private let recent: RecentEvents

    private init(
        channel: any Channel,
        handler: NIOLoopBound<QMPHandler>,
        events: AsyncStream<QMPEvent>,
        recent: RecentEvents
    ) {
        self.channel = channel
        self.handler = handler
        self.events = events
        self.recent = recent
    }

    /// Waits for the first event named `name` stamped at or after `since` (QEMU's wall-clock microseconds),
    /// also one that arrived before the call; throws after `timeout`.
    public func waitForEvent(_ name: String, since: Int64, timeout: Duration = .seconds(10)) async throws -> QMPEvent {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let event = self.recent.first(named: name, since: since) { return event }
            guard ContinuousClock.now < deadline, self.channel.isActive else {
                throw QMPError(.timeout, "no \(name) event within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    /// Connects to the QMP socket at `path`, reads the greeting and enters command mode.
    public static func connect(
        path: String,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        timeout: Duration = .seconds(10),
        logger: Logger
    ) async throws -> QMPClient {
        let (stream, continuation) = AsyncStream.makeStream(of: QMPEvent.self, bufferingPolicy: .bufferingNewest(1024))
        let recent = RecentEvents()
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let handler = QMPHandler(
                            eventLoop: channel.eventLoop,
                            events: continuation,
                            recent: recent,
                            logger: logger
                        )
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineBasedFrameDecoder()))
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
                .connect(unixDomainSocketPath: path).get()
        } catch {
            continuation.finish()
            throw QMPError(.disconnected, "cannot connect to \(path): \(error)")
        }
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(
                try channel.pipeline.syncOperations.handler(type: QMPHandler.self),
                eventLoop: channel.eventLoop
            )
        }.get()
        let client = QMPClient(channel: channel, handler: handler, events: stream, recent: recent)
        do {
            try await client.withTimeout(timeout, what: "greeting") {
                try await channel.eventLoop.flatSubmit { handler.value.greeting.futureResult }.get()
            }
            _ = try await client.execute("qmp_capabilities", timeout: timeout)
        } catch {
            await client.close()
            throw error
        }
        return client
    }

    /// Runs one command and returns its `return` value.
    public func execute(
        _ command: String,
        arguments: [String: JSONValue]? = nil,
        timeout: Duration = .seconds(30)
    ) async throws -> JSONValue {
        let handler = self.handler
        let future = self.channel.eventLoop.flatSubmit {
            handler.value.send(command: command, arguments: arguments)
        }
        return try await self.withTimeout(timeout, what: command) { try await future.get() }
    }

    /// Closes the connection; pending commands fail with `disconnected`.
    public func close() async {
        try? await self.channel.close()
    }

    private func withTimeout<T: Sendable>(
        _ timeout: Duration,
        what: String,
        _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                throw QMPError(.timeout, "no reply to \(what) within \(timeout)")
            }
            return value
        }
    }
}

/// The channel handler behind `QMPClient`; lives on its event loop.
final class QMPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let greeting: EventLoopPromise<Void>
    private let eventLoop: any EventLoop
    private let events: AsyncStream<QMPEvent>.Continuation
    private let recent: RecentEvents
    private let logger: Logger
    private var context: ChannelHandlerContext?
    private var pending: [Int: EventLoopPromise<JSONValue>] = [:]
    private var nextID = 1
    private var greeted = false

    init(
        eventLoop: any EventLoop,
        events: AsyncStream<QMPEvent>.Continuation,
        recent: RecentEvents,
        logger: Logger
    ) {
        self.eventLoop = eventLoop
        self.greeting = eventLoop.makePromise()
        self.events = events
        self.recent = recent
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func send(command: String, arguments: [String: JSONValue]?) -> EventLoopFuture<JSONValue> {
        guard let context = self.context, context.channel.isActive else {
            return self.eventLoop.makeFailedFuture(QMPError(.disconnected, "monitor connection is closed"))
        }
        let id = self.nextID
        self.nextID += 1
        var message: [String: JSONValue] = ["execute": .string(command), "id": .number(Double(id))]
        if let arguments { message["arguments"] = .object(arguments) }
        let promise = self.eventLoop.makePromise(of: JSONValue.self)
        do {
            var bytes = try JSONEncoder().encode(JSONValue.object(message))
            bytes.append(UInt8(ascii: "\n"))
            self.pending[id] = promise
            context.writeAndFlush(NIOAny(context.channel.allocator.buffer(bytes: bytes)), promise: nil)
        } catch {
            promise.fail(error)
        }
        return promise.futureResult
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let line = Array(buffer: Self.unwrapInboundIn(data))
        let message: QMPMessage
        do {
            message = try QMPMessage.decode(line: line)
        } catch {
            self.logger.debug("Ignoring malformed QMP line", metadata: ["qmp.error": "\(error)"])
            return
        }
        switch message {
        case .greeting:
            self.greeted = true
            self.greeting.succeed()
        case .success(let id, let value):
            self.complete(id: id) { $0.succeed(value) }
        case .failure(let id, let errorClass, let description):
            self.complete(id: id) { $0.fail(QMPError(.commandFailed, "\(errorClass): \(description)")) }
        case .event(let event):
            self.recent.append(event)
            self.events.yield(event)
        }
    }

    private func complete(id: Int?, _ body: (EventLoopPromise<JSONValue>) -> Void) {
        guard let id, let promise = self.pending.removeValue(forKey: id) else {
            self.logger.debug(
                "QMP reply without a pending command",
                metadata: ["qmp.id": "\(id.map(String.init) ?? "none")"]
            )
            return
        }
        body(promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let error = QMPError(.disconnected, "monitor connection closed")
        if !self.greeted { self.greeting.fail(error) }
        for promise in self.pending.values { promise.fail(error) }
        self.pending.removeAll()
        self.events.finish()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.logger.debug("QMP connection error", metadata: ["qmp.error": "\(error)"])
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension QMPHandler: Sendable {}

/// The last 256 events of one monitor connection.
final class RecentEvents: Sendable {
    private let events = NIOLockedValueBox<[QMPEvent]>([])

    func append(_ event: QMPEvent) {
        self.events.withLockedValue {
            if $0.count >= 256 { $0.removeFirst($0.count - 255) }
            $0.append(event)
        }
    }

    func first(named name: String, since: Int64) -> QMPEvent? {
        self.events.withLockedValue { $0.first { $0.name == name && $0.timestampMicroseconds >= since } }
    }
}
