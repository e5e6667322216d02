import ArgumentParser
import Foundation
import VNSnapPeer

/// `vnsnap-peer leave`: leave the cluster gracefully and stop the peer.
struct LeaveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "leave",
        abstract: "Leave the cluster gracefully, then stop the peer (as SIGTERM does).",
        discussion: """
            The other members mark this peer `left` at once instead of declaring it dead after a timeout; \
            its VMs are stopped. \(PeerSocketOptions.socketDiscussion)
            """
    )

    @OptionGroup var peer: PeerSocketOptions

    @Option(name: .long, help: "Seconds to wait for the peer to stop.")
    var timeout: Double = 60

    func run() async throws {
        let status = try await self.peer.status()
        _ = try await self.peer.send(ControlRequest(command: "leave"))
        print("\(status.peer.name) announced it is leaving; waiting for the peer (pid \(status.peer.pid)) to stop")
        let deadline = ContinuousClock.now + .seconds(self.timeout)
        while ContinuousClock.now < deadline {
            // kill(pid, 0) fails with ESRCH once the process is gone.
            if kill(status.peer.pid, 0) != 0, errno == ESRCH {
                print("\(status.peer.name) left the cluster and stopped")
                return
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw failure("\(status.peer.name) (pid \(status.peer.pid)) did not stop within \(self.timeout) s")
    }
}
