import NIOCore
import ServiceLifecycle

extension NIOAsyncChannel where Outbound == Never, Inbound: Sendable {
    /// A listening channel's loop: serves each accepted connection with `serve`, concurrently, until graceful
    /// shutdown or cancellation closes the listener.
    func serveConnections(_ serve: @escaping @Sendable (Inbound) async -> Void) async throws {
        try await withTaskCancellationOrGracefulShutdownHandler {
            try await self.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in inbound {
                        group.addTask { await serve(connection) }
                    }
                }
            }
        } onCancelOrGracefulShutdown: {
            self.channel.close(promise: nil)
        }
    }
}
