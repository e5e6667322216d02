import Foundation
import VNSnapCore

/// The running daemon's parts as the control API sees them: answers `status`, `leave` and `keys`.
struct DaemonServices: Sendable {
    let config: PeerConfig
    let session: UInt64
    let started: ContinuousClock.Instant
    let switchService: SwitchService
    let membership: MembershipService
    let supervisor: VMSupervisor
    /// Starts the daemon's graceful shutdown.
    let shutdown: @Sendable () async -> Void

    func handle(_ request: ControlRequest) async -> ControlResponse {
        switch request.command {
        case "status":
            return await self.statusResponse()
        case "leave":
            await self.membership.leave()
            await self.shutdown()
            return ControlResponse(ok: true)
        case "keys":
            guard let change = request.keyChange else {
                return ControlResponse(ok: false, error: "keys needs a change (install, use or remove)")
            }
            do {
                _ = try await self.membership.change(change)
            } catch {
                return ControlResponse(ok: false, error: "\(error)")
            }
            return await self.statusResponse()
        default:
            return ControlResponse(
                ok: false,
                error: "unknown command \"\(request.command)\" (known: status, leave, keys)"
            )
        }
    }

    private func statusResponse() async -> ControlResponse {
        do {
            let status = PeerStatus(
                peer: .init(
                    name: self.config.peer.name,
                    id: self.config.peer.id.description,
                    bind: self.switchService.tunnelAddress.displayString,
                    roles: self.config.peer.roles.map(\.rawValue).sorted(),
                    cluster: self.config.cluster.name,
                    session: self.session,
                    uptimeSeconds: PeerDaemon.seconds(self.started.duration(to: .now)),
                    version: PeerDaemon.version,
                    pid: getpid()
                ),
                membership: try await self.membership.status(),
                violins: self.config.violins,
                vms: await self.supervisor.status(),
                switch: try await self.switchService.status()
            )
            return ControlResponse(ok: true, status: status)
        } catch {
            return ControlResponse(ok: false, error: "status failed: \(error)")
        }
    }
}
