import ArgumentParser
import Foundation
import VNSnapPeer

/// `vnsnap-peer keys`: the cluster keyring, changed cluster-wide.
struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "List or change the cluster keyring on every peer (install, use, remove).",
        discussion: """
            Rotate a key without downtime, as serf does: `keys install NEW` (every peer can open with it), \
            `keys use NEW` (every peer seals with it), `keys remove OLD`. Each change is made here, stored in \
            the keyring file, and sent to every member; a member that was away catches up when it returns, as \
            long as one of its keys is still installed. Each change waits until every alive member has it.
            """,
        subcommands: [List.self, Install.self, Use.self, Remove.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the keyring here and whether each member has the same one.",
            discussion: PeerSocketOptions.socketDiscussion
        )

        @OptionGroup var peer: PeerSocketOptions

        func run() async throws {
            let status = try await self.peer.status()
            print(KeysCommand.report(status), terminator: "")
        }
    }

    struct Install: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Install a key (base64) on every peer.")
        @OptionGroup var options: ChangeOptions
        @Argument(help: "The new key, base64 (make one with `vnsnap-peer keygen`).") var key: String

        func run() async throws { try await self.options.apply(.install(base64: self.key)) }
    }

    struct Use: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make an installed key primary on every peer.")
        @OptionGroup var options: ChangeOptions
        @Argument(help: "The key: base64, or 8+ hex digits of its fingerprint.") var key: String

        func run() async throws { try await self.options.apply(.use(key: self.key)) }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a key that is not primary from every peer.")
        @OptionGroup var options: ChangeOptions
        @Argument(help: "The key: base64, or 8+ hex digits of its fingerprint.") var key: String

        func run() async throws { try await self.options.apply(.remove(key: self.key)) }
    }

    /// Options shared by the changes.
    struct ChangeOptions: ParsableArguments {
        @OptionGroup var peer: PeerSocketOptions

        @Option(name: .long, help: "Seconds to wait for every alive member to have the change (0: do not wait).")
        var wait: Double = 20

        func apply(_ change: KeyringChange) async throws {
            guard let status = try await self.peer.send(ControlRequest(command: "keys", keyChange: change)).status
            else {
                throw failure("the peer returned no status")
            }
            print(StatusFormatter.keyring(status.membership), terminator: "")
            guard self.wait > 0 else { return }
            let deadline = ContinuousClock.now + .seconds(self.wait)
            var latest = status
            while true {
                let behind = KeysCommand.behind(latest)
                if behind.isEmpty {
                    print("every alive member has keyring generation \(latest.membership.keyring.generation)")
                    return
                }
                guard ContinuousClock.now < deadline else {
                    print(KeysCommand.report(latest), terminator: "")
                    throw failure(
                        "not every alive member has the change after \(self.wait) s: \(behind.joined(separator: ", "))"
                    )
                }
                try await Task.sleep(for: .milliseconds(250))
                latest = try await self.peer.status()
            }
        }
    }

    /// Alive members whose keyring differs from this peer's.
    static func behind(_ status: PeerStatus) -> [String] {
        status.membership.members.filter { $0.state == "alive" && !$0.keyringInSync }.map(\.name)
    }

    static func report(_ status: PeerStatus) -> String {
        var out = StatusFormatter.keyring(status.membership)
        out += StatusFormatter.table(
            ["MEMBER", "STATE", "KEYRING"],
            status.membership.members.map {
                [
                    $0.name, $0.state,
                    "generation \($0.keyringGeneration)" + ($0.keyringInSync ? " (same)" : " (differs)"),
                ]
            }
        )
        return out
    }
}
