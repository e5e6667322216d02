import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Prometheus
import ServiceLifecycle
import UnixSignals
import VNSnapCore
import VNSnapCrypto
import VNSnapHypervisor

/// The peer daemon: the switch, membership, the VM supervisor and the control API as one `ServiceGroup`.
///
/// Sockets are bound and the durable term read before anything starts, so a port in use, a stale peer or a
/// corrupt term file fails the start cleanly. Shutdown (SIGTERM, SIGINT, `vnsnap-peer leave`) runs in reverse:
/// the control API closes, the peer leaves the cluster, the VMs stop, then the switch.
public enum PeerDaemon {
    /// The software version shown in `status`.
    public static let version = "0.2.0"

    /// Runs the peer until SIGTERM, SIGINT or `leave`.
    ///
    /// With `[metrics]` in the config, `GET /metrics` serves `metrics`: the registry the caller bootstrapped
    /// swift-metrics with (a peer run without one serves nothing but what its status gives).
    public static func run(
        config: PeerConfig,
        qemu: String = "qemu-system-x86_64",
        metrics registry: PrometheusCollectorRegistry? = nil,
        logger: Logger
    ) async throws {
        let started = ContinuousClock.now
        let termStore = TermStore(path: config.membership.termFile)
        _ = try termStore.load()  // refuse a corrupt term file before creating or binding anything
        try FileManager.default.createDirectory(atPath: config.peer.dataDirectory, withIntermediateDirectories: true)
        // Receivers drop datagrams of a lower session than they saw: sessions only go up, whatever the clock does.
        let session = try TermStore.session(path: config.peer.dataDirectory + "/session")
            .nextSession(now: UInt64(Date().timeIntervalSince1970 * 1_000_000_000))

        let catalog = try SnapshotCatalog(path: config.peer.dataDirectory + "/catalog.sqlite")
        // A VM whose disk was snapshotted runs on its newest overlay, not on the configured (frozen) file.
        let disks = DiskLayers(config: config)
        let hosted = try HostedVMs(config: config, logger: logger)
        let definitions = try hosted.all.map { try disks.current($0, logger: logger) }
        let snapshotBox = NIOLockedValueBox<SnapshotService?>(nil)
        let storeBox = NIOLockedValueBox<StoreService?>(nil)
        // The keyring as rotations leave it, for the image store's connections.
        let keyringBox = NIOLockedValueBox(config.keyring)
        // This run's key pair: tunnels between two peers are sealed with keys a relay cannot derive (DESIGN §10).
        let exchange = ExchangeKeyPair.generate()
        let switchService = try await SwitchService.start(
            me: config.peer.name,
            bind: config.peer.bind,
            crypto: TunnelCrypto(keyring: config.keyring, clusterName: config.cluster.name),
            exchange: exchange,
            violins: config.violins,
            ports: hosted.all.map { Self.portSpec(config, $0) },
            tunnels: [],
            session: session,
            isRelay: config.peer.roles.contains(.relay),
            logger: logger
        )
        let membership: MembershipService
        do {
            membership = try await MembershipService.start(
                Self.membershipConfiguration(
                    config,
                    session: session,
                    tunnelPort: switchService.tunnelAddress.port,
                    exchangeKey: exchange.publicKey
                ),
                logger: logger,
                onEvent: { event in
                    if case .snapshot(let message) = event {
                        snapshotBox.withLockedValue { $0 }?.deliver(message)
                        return
                    }
                    if case .storeDial(let relay, let token) = event {
                        storeBox.withLockedValue { $0 }?.dialBack(
                            relay: relay,
                            token: token,
                            me: config.peer.id,
                            tickets: Self.spliceTickets(config, keyringBox.withLockedValue { $0 })
                        )
                        return
                    }
                    if case .memberDown(let name) = event, let snapshots = snapshotBox.withLockedValue({ $0 }) {
                        snapshots.memberDown(name)
                    }
                    if case .keyringChanged(let keyring) = event { keyringBox.withLockedValue { $0 = keyring } }
                    await Self.follow(event, switchService: switchService, config: config)
                }
            )
        } catch {
            await switchService.close()
            throw error
        }
        let store: StoreService?
        let splice: SpliceRelay?
        do {
            store =
                config.peer.roles.contains(.store)
                ? try await StoreService(
                    config: config,
                    tunnelPort: switchService.tunnelAddress.port ?? config.peer.bind.port,
                    keyring: keyringBox,
                    catalog: catalog,
                    logger: logger
                ) : nil
            storeBox.withLockedValue { $0 = store }
            splice = try await Self.spliceRelay(
                config,
                tunnelPort: switchService.tunnelAddress.port ?? config.peer.bind.port,
                keyring: keyringBox,
                membership: membership,
                logger: logger
            )
        } catch {
            await switchService.close()
            throw error
        }
        let supervisor = VMSupervisor(
            definitions: definitions,
            paths: { vm in Self.paths(config, vm.name) },
            qemu: qemu,
            keepRunning: config.peer.keepVMs,
            peerName: config.peer.name,
            // Waits (a few seconds at most) for the cluster's ownership records from the snapshot service.
            admission: { vm in
                while !Task.isCancelled {
                    if let snapshots = snapshotBox.withLockedValue({ $0 }) {
                        return await snapshots.admissionRecord(vm.name)
                    }
                    try? await Task.sleep(for: .milliseconds(50))
                }
                return nil
            },
            onReattach: { vm in
                // Its epoch is at most the VIOLIN's newest this peer knows (a snapshot it took part in); erring
                // high is harmless: frames of an epoch below a cut are recorded either way, and the next snapshot's
                // epoch is above every one in the catalog.
                guard let violin = hosted.definition(vm)?.violin,
                    let epoch = try? await catalog.highestEpoch(violin: violin), epoch > 0
                else { return }
                try? await switchService.setEpoch(vm, epoch: epoch)
            },
            onStart: { vm in await switchService.vmStarted(vm) },
            logger: logger
        )
        let snapshots = SnapshotService(
            config: config,
            membership: membership,
            switchService: switchService,
            supervisor: supervisor,
            hosted: hosted,
            catalog: catalog,
            keyring: { keyringBox.withLockedValue { $0 } },
            logger: logger
        )
        snapshotBox.withLockedValue { $0 = snapshots }
        let groupBox = NIOLockedValueBox<ServiceGroup?>(nil)
        let services = DaemonServices(
            config: config,
            session: session,
            started: started,
            switchService: switchService,
            membership: membership,
            supervisor: supervisor,
            snapshots: snapshots,
            store: store,
            splice: splice,
            shutdown: { await groupBox.withLockedValue { $0 }?.triggerGracefulShutdown() }
        )
        var metricsServer: MetricsServer?
        if let address = config.metrics {
            let statusMetrics = StatusMetrics()
            do {
                metricsServer = try await MetricsServer.bind(
                    host: address.host,
                    port: address.port,
                    registry: registry ?? PrometheusCollectorRegistry(),
                    refresh: {
                        if let status = await services.statusResponse().status { statusMetrics.update(status) }
                    },
                    logger: logger
                )
            } catch {
                await switchService.close()
                throw error
            }
        }
        let control: ControlServer
        do {
            control = try await ControlServer.bind(
                path: config.peer.controlSocket,
                handler: { request, progress in await services.handle(request, progress: progress) },
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
                "peer.control": "\(config.peer.controlSocket)", "peer.vms": "\(definitions.count)",
            ]
        )
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: switchService),
                    .init(service: supervisor),
                    .init(service: membership),
                    // After what it drives: on shutdown it stops first, cancelling its work.
                    .init(service: snapshots),
                    .init(service: control),
                    // Under systemd (`Type=notify`): ready once joined or running alone; then nothing to do.
                    .init(
                        service: SystemdReadiness(
                            notifier: SystemdNotifier(),
                            membership: membership,
                            hasSeeds: !config.membership.seeds.isEmpty,
                            aloneAfter: Self.readyAloneAfter,
                            logger: logger
                        ),
                        successTerminationBehavior: .ignore
                    ),
                ] + (store.map { [.init(service: $0)] } ?? []) + (splice.map { [.init(service: $0)] } ?? [])
                    + (metricsServer.map { [.init(service: $0)] } ?? []),
                gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [],
                logger: logger
            )
        )
        groupBox.withLockedValue { $0 = group }
        try await group.run()
        logger.info("Peer stopped", metadata: ["peer.name": "\(config.peer.name)"])
    }

    /// How long a peer whose seeds do not answer waits before telling systemd it is ready (running alone).
    static let readyAloneAfter = Duration.seconds(10)

    /// Tunnels follow membership; a new keyring goes to the switch too.
    static func follow(_ event: MembershipEvent, switchService: SwitchService, config: PeerConfig) async {
        switch event {
        case .memberUp(let name, let tunnel, let relays, let nat, let exchangeKey):
            guard let address = HostPort(tunnel) else { return }
            try? await switchService.addTunnel(
                SwitchService.TunnelSpec(
                    name: name,
                    address: address,
                    relays: relays,
                    nat: nat,
                    exchangeKey: exchangeKey
                )
            )
        case .relaysChanged(let relays, let nat):
            await switchService.setRelays(relays, nat: nat)
        case .memberDown(let name):
            await switchService.removeTunnel(name: name)
        case .keyringChanged(let keyring):
            await switchService.replaceCrypto(TunnelCrypto(keyring: keyring, clusterName: config.cluster.name))
        case .snapshot, .storeDial:
            break  // routed to the snapshot and store services before this
        }
    }

    /// Where one VM's sockets and logs live: the supervisor and the switch must agree.
    static func paths(_ config: PeerConfig, _ vm: String) -> QEMUPaths {
        QEMUPaths(vmDirectory: config.vmDirectory(vm), switchPortSocket: config.switchPortSocket(vm))
    }

    /// The switch port of `vm`, whose VIOLIN the configuration defines (the loader checks configured VMs, and
    /// `HostedVMs` adopted ones).
    static func portSpec(_ config: PeerConfig, _ vm: VMDefinition) -> SwitchService.PortSpec {
        let paths = Self.paths(config, vm.name)
        return SwitchService.PortSpec(
            vm: vm.name,
            violin: config.violin(named: vm.violin)!,  // !-safe, checked as said above
            switchSocket: paths.switchPortSocket,
            vmSocket: paths.nicSocket
        )
    }

    static func membershipConfiguration(
        _ config: PeerConfig,
        session: UInt64,
        tunnelPort: Int?,
        exchangeKey: [UInt8] = []
    ) -> MembershipService.Configuration {
        var settings = SWIMSettings()
        settings.probeInterval = config.membership.probeInterval
        settings.probeTimeout = config.membership.probeTimeout
        settings.suspicionMultiplier = config.membership.suspicionMultiplier
        let me = MemberState(
            id: config.peer.id,
            name: config.peer.name,
            address: config.membership.advertise.description,
            incarnation: 0,
            status: .alive,
            metadata: MemberMetadata(
                roles: config.peer.roles,
                tunnelAddress: HostPort(host: config.membership.tunnelHost, port: tunnelPort ?? config.peer.bind.port)
                    .description,
                storeCapacity: config.peer.storeCapacity,
                version: Self.version,
                exchangeKey: exchangeKey
            )
        )
        return MembershipService.Configuration(
            me: me,
            settings: settings,
            bind: config.membership.bind,
            seeds: config.membership.seeds.map(\.description),
            clusterName: config.cluster.name,
            session: session,
            keyring: config.keyring,
            keyringPath: config.cluster.keyringPath,
            termStore: TermStore(path: config.membership.termFile)
        )
    }

}
