import Foundation
import Logging
import ServiceLifecycle
import UnixSignals
import VNSnapCore
import VNSnapCrypto
import VNSnapHypervisor

/// The peer daemon: the switch, the VM supervisor and the control API as one `ServiceGroup`.
///
/// Sockets are bound before anything starts, so a port in use or a stale peer fails the start cleanly.
/// Shutdown (SIGTERM, SIGINT) runs in reverse: the control API closes, the VMs stop, then the switch.
public enum PeerDaemon {
    /// The software version shown in `status`.
    public static let version = "0.1.0"

    /// Runs the peer until SIGTERM or SIGINT.
    public static func run(config: PeerConfig, qemu: String = "qemu-system-x86_64", logger: Logger) async throws {
        let started = ContinuousClock.now
        let session = UInt64(Date().timeIntervalSince1970 * 1_000_000_000)
        try FileManager.default.createDirectory(atPath: config.peer.dataDirectory, withIntermediateDirectories: true)

        var ports: [SwitchService.PortSpec] = []
        for vm in config.vms {
            let violin = config.violin(named: vm.violin)!  // !-safe, the loader checked every VM's VIOLIN
            let paths = QEMUPaths(
                vmDirectory: config.vmDirectory(vm.name),
                switchPortSocket: config.switchPortSocket(vm.name)
            )
            ports.append(
                SwitchService.PortSpec(
                    vm: vm.name,
                    violin: violin,
                    switchSocket: paths.switchPortSocket,
                    vmSocket: paths.nicSocket
                )
            )
        }
        let switchService = try await SwitchService.start(
            me: config.peer.name,
            bind: config.peer.bind,
            crypto: TunnelCrypto(keyring: config.keyring, clusterName: config.cluster.name),
            violins: config.violins,
            ports: ports,
            tunnels: config.peers.map { SwitchService.TunnelSpec(name: $0.name, address: $0.address) },
            session: session,
            logger: logger
        )
        let supervisor = VMSupervisor(
            definitions: config.vms,
            paths: { vm in
                QEMUPaths(vmDirectory: config.vmDirectory(vm.name), switchPortSocket: config.switchPortSocket(vm.name))
            },
            qemu: qemu,
            onStart: { vm in await switchService.vmStarted(vm) },
            logger: logger
        )
        let control: ControlServer
        do {
            control = try await ControlServer.bind(
                path: config.peer.controlSocket,
                handler: { request in
                    switch request.command {
                    case "status":
                        do {
                            let status = PeerStatus(
                                peer: .init(
                                    name: config.peer.name,
                                    id: config.peer.id.description,
                                    bind: switchService.tunnelAddress.displayString,
                                    roles: config.peer.roles.map(\.rawValue).sorted(),
                                    cluster: config.cluster.name,
                                    session: session,
                                    uptimeSeconds: Self.seconds(started.duration(to: .now)),
                                    version: Self.version,
                                    pid: getpid()
                                ),
                                keyring: config.keyring.keys.enumerated().map {
                                    .init(fingerprint: $0.element.shortFingerprint, primary: $0.offset == 0)
                                },
                                violins: config.violins,
                                vms: await supervisor.status(),
                                switch: try await switchService.status()
                            )
                            return ControlResponse(ok: true, status: status)
                        } catch {
                            return ControlResponse(ok: false, error: "status failed: \(error)")
                        }
                    default:
                        return ControlResponse(
                            ok: false,
                            error: "unknown command \"\(request.command)\" (known: status)"
                        )
                    }
                },
                logger: logger
            )
        } catch {
            await switchService.close()
            throw error
        }
        logger.info(
            "Peer started",
            metadata: [
                "peer.name": "\(config.peer.name)", "peer.cluster": "\(config.cluster.name)",
                "peer.control": "\(config.peer.controlSocket)", "peer.vms": "\(config.vms.count)",
            ]
        )
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: switchService),
                    .init(service: supervisor),
                    .init(service: control),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [],
                logger: logger
            )
        )
        try await group.run()
        logger.info("Peer stopped", metadata: ["peer.name": "\(config.peer.name)"])
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
