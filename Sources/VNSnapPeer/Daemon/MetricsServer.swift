import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle

/// `GET /metrics` in Prometheus' text format (`[metrics]` in the config), over NIOHTTP1. Each scrape first brings
/// the status-derived metrics up to date (`refresh`), then renders the registry.
public final class MetricsServer: Service, Sendable {
    private let server: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
    private let registry: PrometheusCollectorRegistry
    private let refresh: @Sendable () async -> Void
    private let logger: Logger

    /// The address it listens on.
    public let address: SocketAddress

    private init(
        server: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>,
        registry: PrometheusCollectorRegistry,
        refresh: @escaping @Sendable () async -> Void,
        logger: Logger
    ) {
        self.server = server
        self.registry = registry
        self.refresh = refresh
        self.logger = logger
        self.address = server.channel.localAddress!  // !-safe, a bound socket has a local address
    }

    /// Binds `host:port`; throws (naming it) if it cannot.
    public static func bind(
        host: String,
        port: Int,
        registry: PrometheusCollectorRegistry,
        refresh: @escaping @Sendable () async -> Void,
        logger: Logger
    ) async throws -> MetricsServer {
        let server: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
        do {
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
                            wrappingChannelSynchronously: channel
                        )
                    }
                }
        } catch {
            throw MetricsServerError(message: "cannot listen for /metrics on \(host):\(port): \(error)")
        }
        let metrics = MetricsServer(server: server, registry: registry, refresh: refresh, logger: logger)
        logger.info("Metrics served", metadata: ["metrics.address": "http://\(metrics.address.displayString)/metrics"])
        return metrics
    }

    /// Serves scrapes until graceful shutdown.
    public func run() async throws {
        try await self.server.serveConnections { await self.serve($0) }
    }

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                for try await part in inbound {
                    switch part {
                    case .head(let request): head = request
                    case .body: continue
                    case .end:
                        guard let request = head else { continue }
                        let (status, body) = await self.answer(request)
                        var headers = HTTPHeaders()
                        headers.add(
                            name: "Content-Type",
                            value: status == .ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain"
                        )
                        headers.add(name: "Content-Length", value: "\(body.count)")
                        if status == .methodNotAllowed { headers.add(name: "Allow", value: "GET, HEAD") }
                        if !request.isKeepAlive { headers.add(name: "Connection", value: "close") }
                        try await outbound.write(
                            .head(HTTPResponseHead(version: request.version, status: status, headers: headers))
                        )
                        if request.method != .HEAD {
                            try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: body))))
                        }
                        try await outbound.write(.end(nil))
                        if !request.isKeepAlive { return }
                        head = nil
                    }
                }
            }
        } catch {
            self.logger.debug("A metrics connection ended with an error", metadata: ["error": "\(error)"])
        }
    }

    private func answer(_ request: HTTPRequestHead) async -> (HTTPResponseStatus, [UInt8]) {
        guard request.uri == "/metrics" || request.uri.hasPrefix("/metrics?") else {
            return (.notFound, Array("only /metrics is served here\n".utf8))
        }
        guard request.method == .GET || request.method == .HEAD else {
            return (.methodNotAllowed, Array("GET or HEAD /metrics\n".utf8))
        }
        await self.refresh()
        return (.ok, self.registry.emitToBuffer())
    }
}

/// Why the metrics endpoint could not start.
public struct MetricsServerError: Error, CustomStringConvertible {
    /// What went wrong.
    public var message: String
    public var description: String { self.message }
}
