import ArgumentParser
import Foundation
import VNSnapPeer

/// `vnsnap-peer status`: what the peer on this host is doing.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show this host's peer: identity, keyring, VMs and switch counters.",
        discussion: """
            Talks to the peer over its control socket. The socket is, in order: --socket, the \
            control_socket of --config, $VNSNAP_CONTROL_SOCKET, or \(PeerConfigDefaults.controlSocket).
            """
    )

    @Option(name: .long, help: "The peer's control socket.")
    var socket: String?

    @Option(name: .shortAndLong, help: "The peer's config file (its control_socket is used).")
    var config: String?

    @Flag(name: .long, help: "Print the status as JSON (stable field names).")
    var json = false

    func run() async throws {
        let socket = try self.resolveSocket()
        let response: ControlResponse
        do {
            response = try await ControlClient.request(ControlRequest(command: "status"), socket: socket)
        } catch {
            throw failure("\(error)")
        }
        guard response.ok, let status = response.status else {
            throw failure(response.error ?? "the peer returned no status")
        }
        if self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(status), as: UTF8.self))
        } else {
            print(StatusFormatter.format(status), terminator: "")
        }
    }

    private func resolveSocket() throws -> String {
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
}
