import Foundation
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import ServiceLifecycle
import VNSnapCore

/// The control API: line-delimited JSON over a unix stream socket, only for this host.
///
/// The socket is created mode 0600 (root talks to root), so only the peer's owner can ask it things.
public final class ControlServer: Service, Sendable {
    /// Answers one request; long requests may send progress lines first through the second argument.
    public typealias Handler =
        @Sendable (ControlRequest, _ progress: @escaping @Sendable (String) async -> Void) async
        -> ControlResponse

    private let server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
    private let path: String
    private let handler: Handler
    private let logger: Logger

    private init(
        server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>,
        path: String,
        handler: @escaping Handler,
        logger: Logger
    ) {
        self.server = server
        self.path = path
        self.handler = handler
        self.logger = logger
    }

    /// Binds the socket at `path`, replacing a stale one. Refuses if another peer is answering there.
    public static func bind(path: String, handler: @escaping Handler, logger: Logger) async throws -> ControlServer {
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true
        )
        if FileManager.default.fileExists(atPath: path) {
            if (try? await ControlClient.request(ControlRequest(command: "status"), socket: path)) != nil {
                throw ControlError(.inUse, "another vnsnap-peer is already answering on \(path)")
            }
            try FileManager.default.removeItem(atPath: path)
        }
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(unixDomainSocketPath: path) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineBasedFrameDecoder()))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        chmod(path, 0o600)
        return ControlServer(server: server, path: path, handler: handler, logger: logger)
    }

    /// Serves connections until graceful shutdown, then removes the socket.
    public func run() async throws {
        try await self.server.serveConnections { await self.serve($0) }
        try? FileManager.default.removeItem(atPath: self.path)
    }

    private func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                for try await line in inbound {
                    let response: ControlResponse
                    if let request = try? JSONDecoder().decode(ControlRequest.self, from: Data(line.readableBytesView))
                    {
                        response = await self.handler(request) { text in
                            guard var bytes = try? JSONEncoder().encode(ControlResponse(ok: true, progress: text))
                            else {
                                return
                            }
                            bytes.append(UInt8(ascii: "\n"))
                            try? await outbound.write(ByteBuffer(bytes: bytes))
                        }
                    } else {
                        response = ControlResponse(ok: false, error: "malformed request: expected {\"command\": ...}")
                    }
                    var bytes = try JSONEncoder().encode(response)
                    bytes.append(UInt8(ascii: "\n"))
                    try await outbound.write(ByteBuffer(bytes: bytes))
                }
            }
        } catch {
            self.logger.debug("Control connection ended", metadata: ["control.error": "\(error)"])
        }
    }
}
