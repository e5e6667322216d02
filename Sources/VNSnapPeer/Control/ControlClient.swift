import Foundation
import NIOCore
import NIOExtras
import NIOPosix
import VNSnapCore

/// The CLI's side of the control socket.
public enum ControlClient {
    /// Sends one request to the peer at `socket` and returns its response.
    public static func request(
        _ request: ControlRequest,
        socket: String,
        timeout: Duration = .seconds(10),
        onProgress: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws -> ControlResponse {
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(2))
                .connect(unixDomainSocketPath: socket) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineBasedFrameDecoder()))
                        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw ControlError(
                .unreachable,
                "cannot reach the peer's control socket \(socket): \(error) (is `vnsnap-peer run` running?)"
            )
        }
        return try await withThrowingTaskGroup(of: ControlResponse?.self) { group in
            group.addTask {
                try await channel.executeThenClose { inbound, outbound in
                    var bytes = try JSONEncoder().encode(request)
                    bytes.append(UInt8(ascii: "\n"))
                    try await outbound.write(ByteBuffer(bytes: bytes))
                    for try await line in inbound {
                        let response = try JSONDecoder().decode(
                            ControlResponse.self,
                            from: Data(line.readableBytesView)
                        )
                        if let progress = response.progress {
                            onProgress(progress)
                            continue
                        }
                        return response
                    }
                    throw ControlError(.closed, "the peer closed the control connection without answering")
                }
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let response = first else {
                channel.channel.close(promise: nil)
                throw ControlError(.timeout, "no answer from \(socket) within \(timeout)")
            }
            return response
        }
    }
}
