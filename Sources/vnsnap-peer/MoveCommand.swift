import ArgumentParser
import Foundation
import VNSnapPeer

/// `vnsnap-peer move VM --to PEER`: runs one VM on another peer, consistently with the rest of its VIOLIN.
struct MoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "move",
        abstract: "Move one VM to another peer: a snapshot of its VIOLIN restored with the VM there.",
        discussion: """
            Takes a snapshot of the VM's VIOLIN to store peers' memory (one replica; a store peer must be alive), \
            then restores it with the VM placed on PEER: every VM of the VIOLIN goes back to the snapshot's cut \
            together (so the group stays consistent) and the copy on the VM's old peer stops at the switch-over. \
            The VIOLIN therefore redoes the few seconds between the cut and the switch-over (TCP in the guests \
            retransmits; clients outside the VIOLIN see that brief step back). The initiator records PEER as the \
            VM's owner (a new generation), so the old peer never starts it again. The snapshot is deleted once the \
            move has succeeded. Asks first, unless --yes.

            """ + PeerSocketOptions.socketDiscussion
    )

    @OptionGroup var peer: PeerSocketOptions

    @Argument(help: "The VM to move.")
    var vm: String

    @Option(name: .long, help: "The peer to run it on (it needs the vm role).")
    var to: String

    @Option(name: .long, help: "The VM's VIOLIN, if this peer cannot tell.")
    var violin: String?

    @Flag(name: .long, help: "Do not ask before rolling the VIOLIN back to the move's cut.")
    var yes = false

    func run() async throws {
        if !self.yes {
            guard isatty(STDIN_FILENO) != 0 else {
                throw failure(
                    "moving \(self.vm) rolls its whole VIOLIN back to the move's snapshot (a few seconds); nothing was done: pass --yes"
                )
            }
            print("Moving \(self.vm) to \(self.to) rolls its VIOLIN back a few seconds. Go on? [y/N] ", terminator: "")
            fflush(nil)
            guard ["y", "yes"].contains(readLine()?.lowercased() ?? "") else {
                throw failure("not confirmed; nothing was done")
            }
        }
        let started = ContinuousClock.now
        let response = try await self.peer.send(
            ControlRequest(command: "move", yes: true, on: [self.vm: self.to], violin: self.violin),
            timeout: .seconds(3600)
        ) { line in
            SnapshotFormatter.progress(line, since: started, toStandardError: false)
        }
        print(SnapshotFormatter.restoreTable(response.restore ?? [:]), terminator: "")
        print("\(self.vm) runs on \(self.to)")
    }
}
