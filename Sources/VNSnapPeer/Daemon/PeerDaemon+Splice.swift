import Logging
import NIOConcurrencyHelpers
import VNSnapCore
import VNSnapCrypto

/// Store streams across domains (DESIGN §10): a relay's splice endpoint, and the keys of its tickets.
extension PeerDaemon {
    /// The cluster's keys for splice tickets, as the keyring is now.
    static func spliceTickets(_ config: PeerConfig, _ keyring: Keyring) -> TunnelCrypto {
        TunnelCrypto(keyring: keyring, clusterName: config.cluster.name, purpose: "splice")
    }

    /// On a `relay` peer: the endpoint where peers outside a store's NAT are joined to it (three ports above the
    /// tunnel); `nil` on other peers.
    static func spliceRelay(
        _ config: PeerConfig,
        tunnelPort: Int,
        keyring: NIOLockedValueBox<Keyring>,
        membership: MembershipService,
        logger: Logger
    ) async throws -> SpliceRelay? {
        guard config.peer.roles.contains(.relay) else { return nil }
        return try await SpliceRelay.bind(
            host: config.peer.bind.host,
            port: SpliceRelay.port(tunnelPort: tunnelPort),
            tickets: { Self.spliceTickets(config, keyring.withLockedValue { $0 }) },
            dial: { store, token, port in await membership.askToDial(store: store, token: token, port: port) },
            logger: logger
        )
    }
}
