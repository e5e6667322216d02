import ArgumentParser
import VNSnapPeer

/// The `vnsnap-peer` command line.
@main
struct VNSnapPeerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vnsnap-peer",
        abstract: "Peer-to-peer daemon for network-consistent snapshots of groups of VMs (VIOLINs).",
        discussion: """
            Every host runs `vnsnap-peer run`. Peers find each other by gossip (SWIM with Lifeguard) starting \
            from a few seeds, agree on who is alive and which peer initiates snapshots, start their VMs, \
            connect them to the VIOLIN switch, and tunnel their frames, sealed with the cluster key, to the \
            other peers. `vnsnap-peer status` asks the peer on this host what it sees.
            """,
        version: PeerDaemon.version,
        subcommands: [
            RunCommand.self, StatusCommand.self, LeaveCommand.self, KeysCommand.self, KeygenCommand.self,
            SnapshotCommand.self, ListCommand.self, ShowCommand.self, RestoreCommand.self, DeleteCommand.self,
            MoveCommand.self, StallCommand.self, SchedulesCommand.self,
        ]
    )
}
