import ArgumentParser
import VNSnapPeer

/// The `vnsnap-peer` command line.
@main
struct VNSnapPeerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vnsnap-peer",
        abstract: "Peer-to-peer daemon for network-consistent snapshots of groups of VMs (VIOLINs).",
        discussion: """
            Every host runs `vnsnap-peer run`. The peer starts its VMs, connects them to the VIOLIN switch, \
            and tunnels their frames, sealed with the cluster key, to the other peers. `vnsnap-peer status` \
            asks the peer on this host what it is doing.
            """,
        version: PeerDaemon.version,
        subcommands: [RunCommand.self, StatusCommand.self, KeygenCommand.self]
    )
}
