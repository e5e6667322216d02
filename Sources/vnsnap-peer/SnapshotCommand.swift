import ArgumentParser
import Foundation
import VNSnapCore
import VNSnapPeer

extension SnapshotMode: ExpressibleByArgument {}
extension SnapshotTarget.Kind: ExpressibleByArgument {}

/// `vnsnap-peer snapshot VIOLIN`: a network-consistent snapshot of every VM of a VIOLIN.
struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Take a network-consistent live snapshot of every VM of a VIOLIN.",
        discussion: """
            Asks the cluster's initiator (from any host), shows each phase as it goes, and ends with a table per \
            VM: uptime, downtime, stall, TCP backoff, disruption, cut skew, frames held / dropped / recorded, raw \
            and compressed image bytes, time to durable. Exits non-zero, with the reason, if the snapshot was \
            refused or aborted; an aborted snapshot leaves every VM running and nothing listed.

            """ + PeerSocketOptions.socketDiscussion
    )

    @OptionGroup var peer: PeerSocketOptions

    @Argument(help: "The VIOLIN to snapshot.")
    var violin: String

    @Option(
        name: .long,
        help: "cow (pause of milliseconds, RAM saved copy-on-write), precopy, or drop (VNsnap's policy)."
    )
    var mode: SnapshotMode = .cow

    @Option(name: .long, help: "A name for the snapshot (default: the VIOLIN and the time).")
    var name: String?

    @Option(
        name: .long,
        help: "disk (each VM's peer's disk) or memory (the RAM of store peers, flushed to their disks)."
    )
    var target: SnapshotTarget.Kind = .disk

    @Option(name: .long, help: "Copies of each image with --target memory, on distinct store peers (1-16).")
    var replicas = 2

    func validate() throws {
        guard (1...16).contains(self.replicas) else {
            throw ValidationError("--replicas \(self.replicas) is not in 1...16")
        }
    }

    @Flag(name: .long, help: "Print the manifest as JSON at the end instead of the table.")
    var json = false

    @Flag(name: .long, help: "Refuse at once, naming it, if an operation runs on the VIOLIN (default: wait in line).")
    var noWait = false

    func run() async throws {
        let name = self.name ?? "\(self.violin)-\(ISO8601DateFormatter().string(from: Date()))"
        let started = ContinuousClock.now
        let response = try await self.peer.send(
            ControlRequest(
                command: "snapshot",
                snapshot: SnapshotOrder(
                    violin: self.violin,
                    mode: self.mode,
                    name: name,
                    target: SnapshotTarget(kind: self.target, replicas: self.replicas)
                ),
                wait: !self.noWait
            ),
            timeout: .seconds(3600)
        ) { [json = self.json] line in
            // With --json, stdout carries only the manifest.
            SnapshotFormatter.progress(line, since: started, toStandardError: json)
        }
        guard let manifest = response.manifest else { throw failure("the peer returned no manifest") }
        try SnapshotFormatter.show(manifest, json: self.json)
    }
}
