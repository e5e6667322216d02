import ArgumentParser
import Foundation
import VNSnapPeer

/// `vnsnap-peer status`: what the peer on this host is doing.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show this host's peer: members, initiator and term, keyring, VMs and switch counters.",
        discussion: PeerSocketOptions.socketDiscussion
    )

    @OptionGroup var peer: PeerSocketOptions

    @Flag(name: .long, help: "Print the status as JSON (stable field names); with --watch, one JSON object per line.")
    var json = false

    @Flag(name: .long, help: "Refresh in place until interrupted.")
    var watch = false

    @Option(name: .long, help: "Seconds between refreshes with --watch.")
    var interval: Double = 1

    func validate() throws {
        guard self.interval >= 0.1 else { throw ValidationError("--interval must be at least 0.1 seconds") }
    }

    func run() async throws {
        guard self.watch else {
            self.show(try await self.peer.status(), pretty: true)
            return
        }
        while true {
            let status = try await self.peer.status()
            if !self.json { print("\u{1B}[H\u{1B}[2J", terminator: "") }  // home and clear, so it refreshes in place
            self.show(status, pretty: false)
            fflush(nil)  // every stream: stdout without touching the global
            try await Task.sleep(for: .seconds(self.interval))
        }
    }

    private func show(_ status: PeerStatus, pretty: Bool) {
        if self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]
            print(String(decoding: (try? encoder.encode(status)) ?? Data(), as: UTF8.self))
        } else {
            print(StatusFormatter.format(status), terminator: "")
        }
    }
}
