import ArgumentParser
import Foundation
import VNSnapCore
import VNSnapPeer

/// `vnsnap-peer stall VIOLIN`: the baseline of a snapshot's stall, measured with no snapshot.
struct StallCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stall",
        abstract: "Measure the longest gap in each local VM's traffic over a few seconds, with no snapshot.",
        discussion: """
            The same measurement as a snapshot's STALL column (the longest gap between two payload frames from
            or to the VM, seen by this peer's switch), taken without a snapshot: what the workload's traffic does
            by itself, to compare a snapshot's stall with. Only this host's VMs of the VIOLIN are measured.

            \(PeerSocketOptions.socketDiscussion)
            """
    )

    @OptionGroup var peer: PeerSocketOptions

    @Argument(help: "The VIOLIN.")
    var violin: String

    @Option(name: .long, help: "How long to measure, seconds (at most 60).")
    var seconds: Double = 2

    @Flag(name: .long, help: "Print JSON: nanoseconds per VM.")
    var json = false

    func run() async throws {
        let request = ControlRequest(command: "stall", violin: self.violin, seconds: self.seconds)
        let stalls =
            try await self.peer.send(request, timeout: .seconds(Int64(self.seconds) + 30)).stalls ?? [:]
        if self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(stalls), as: UTF8.self))
        } else if stalls.isEmpty {
            print("no VM of \(self.violin) on this host")
        } else {
            var rows = [["VM", "LONGEST GAP ms"]]
            for (vm, stall) in stalls.sorted(by: { $0.key < $1.key }) {
                rows.append([vm, SnapshotFormatter.ms(stall)])
            }
            print(SnapshotFormatter.columns(rows) + "(over \(self.seconds) s, no snapshot)", terminator: "\n")
        }
    }
}
