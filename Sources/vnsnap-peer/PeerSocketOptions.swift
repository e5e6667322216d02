import ArgumentParser
import Foundation
import VNSnapPeer

/// How a command finds the local peer's control socket.
struct PeerSocketOptions: ParsableArguments {
    @Option(name: .long, help: "The peer's control socket.")
    var socket: String?

    @Option(name: .shortAndLong, help: "The peer's config file (its control_socket is used).")
    var config: String?

    /// --socket, the control_socket of --config, $VNSNAP_CONTROL_SOCKET, or the default.
    func resolve() throws -> String {
        if let socket = self.socket { return socket }
        if let config = self.config {
            do {
                return try PeerConfig.load(path: config).peer.controlSocket
            } catch {
                throw failure("invalid configuration: \(error)")
            }
        }
        if let socket = ProcessInfo.processInfo.environment["VNSNAP_CONTROL_SOCKET"] { return socket }
        return PeerConfigDefaults.controlSocket
    }

    /// Sends `request` and returns the response, or fails with the peer's error.
    func send(
        _ request: ControlRequest,
        timeout: Duration = .seconds(10),
        onProgress: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws -> ControlResponse {
        let socket = try self.resolve()
        let response: ControlResponse
        do {
            response = try await ControlClient.request(
                request,
                socket: socket,
                timeout: timeout,
                onProgress: onProgress
            )
        } catch {
            throw failure("\(error)")
        }
        guard response.ok else { throw failure(response.error ?? "the peer refused without a reason") }
        return response
    }

    /// The peer's status.
    func status() async throws -> PeerStatus {
        guard let status = try await self.send(ControlRequest(command: "status")).status else {
            throw failure("the peer returned no status")
        }
        return status
    }

    static let socketDiscussion = """
        Talks to the peer over its control socket. The socket is, in order: --socket, the \
        control_socket of --config, $VNSNAP_CONTROL_SOCKET, or \(PeerConfigDefaults.controlSocket).
        """
}
