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
    let snapshots: SnapshotService
    /// The image store, on `store` peers.
    let store: StoreService?
    /// The splice endpoint, on `relay` peers.
    let splice: SpliceRelay?
    /// Starts the daemon's graceful shutdown.
    let shutdown: @Sendable () async -> Void

    func handle(_ request: ControlRequest, progress: @escaping @Sendable (String) async -> Void) async
        -> ControlResponse
    {
        switch request.command {
        case "snapshot", "list", "show", "delete", "restore", "stall", "move", "schedules":
            do {
                return try await self.handleSnapshot(request, progress: progress)
            } catch {
                return ControlResponse(ok: false, error: "\(error)")
            }
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
            // A key that still seals snapshots at rest stays: without it they could not be read.
            if case .remove(let reference) = change {
                let sealed = (try? await self.snapshots.snapshotsSealed(withKey: reference)) ?? []
                if !sealed.isEmpty {
                    return ControlResponse(
                        ok: false,
                        error: "key \(reference) still seals \(sealed.count) snapshot(s) at rest: "
                            + "\(sealed.prefix(5).joined(separator: ", "))\(sealed.count > 5 ? ", ..." : ""); "
                            + "delete them first (or keep the key): without it they cannot be restored"
                    )
                }
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
                error:
                    "unknown command \"\(request.command)\" (known: status, leave, keys, snapshot, list, show, delete, restore, move, stall, schedules)"
            )
        }
    }

    private func handleSnapshot(_ request: ControlRequest, progress: @escaping @Sendable (String) async -> Void)
        async throws -> ControlResponse
    {
        switch request.command {
        case "snapshot":
            guard let order = request.snapshot else { throw SnapshotError(.refused, "snapshot needs a VIOLIN") }
            let manifest = try await self.snapshots.requestSnapshot(
                violin: order.violin,
                mode: order.mode,
                name: order.name,
                target: order.target ?? .disk,
                wait: request.wait ?? true
            ) { update in
                let id = update.snapshotID == 0 ? "" : "snapshot \(update.snapshotID): "
                await progress("\(id)\(update.phase)\(update.message.isEmpty ? "" : " (\(update.message))")")
            }
            return ControlResponse(ok: true, manifest: manifest)
        case "list":
            return ControlResponse(ok: true, snapshots: try await self.snapshots.list())
        case "schedules":
            let view = try await self.membership.view()
            let runner = view.initiator.map { "run by the initiator, \(view.names[$0] ?? "\($0)")" }
            return ControlResponse(
                ok: true,
                notes: [runner ?? "no initiator (no majority seen here): not run now"],
                schedules: try await self.snapshots.scheduleStatus()
            )
        case "stall":
            guard let violin = request.violin else { throw SnapshotError(.refused, "stall needs a VIOLIN") }
            let seconds = request.seconds ?? 2
            guard seconds > 0, seconds <= 60 else {
                throw SnapshotError(.refused, "stall: --seconds \(seconds) is not in (0, 60]")
            }
            let stalls = try await self.snapshots.measureStall(
                violin: violin,
                duration: .milliseconds(Int(seconds * 1000))
            )
            return ControlResponse(ok: true, stalls: stalls)
        case "move":
            guard let (vm, target) = request.on?.first, request.on?.count == 1 else {
                throw SnapshotError(.refused, "move needs one VM and its new peer")
            }
            guard request.yes == true else {
                throw SnapshotError(
                    .refused,
                    "moving \(vm) rolls its VIOLIN back to the move's snapshot; nothing was done: confirm, or pass --yes"
                )
            }
            let timings = try await self.snapshots.move(vm, to: target, violin: request.violin, progress: progress)
            return ControlResponse(
                ok: true,
                restore: Dictionary(uniqueKeysWithValues: timings.map { ("\($0.key)", $0.value) })
            )
        case "show":
            guard let id = request.id else { throw SnapshotError(.refused, "show needs a snapshot id") }
            let manifest = try await self.snapshots.manifest(id)
            let locations = await self.snapshots.replicaLocations(manifest)
            return ControlResponse(
                ok: true,
                manifest: manifest,
                replicaLocations: locations.isEmpty ? nil : locations
            )
        case "delete":
            guard let id = request.id else { throw SnapshotError(.refused, "delete needs a snapshot id") }
            let silent = try await self.snapshots.delete(id)
            return ControlResponse(
                ok: true,
                notes: silent.isEmpty
                    ? nil
                    : ["not answered by \(silent.joined(separator: ", ")): they delete it when told again"]
            )
        default:
            guard let id = request.id else { throw SnapshotError(.refused, "restore needs a snapshot id") }
            let manifest = try await self.snapshots.manifest(id)
            guard request.yes == true else {
                let vms = manifest.vms.map { "\($0.name) on \($0.peer)" }.joined(separator: ", ")
                throw SnapshotError(
                    .refused,
                    "restoring snapshot \(id) stops and replaces the VMs of VIOLIN \(manifest.violin) (\(vms)); nothing was stopped: confirm, or pass --yes"
                )
            }
            let timings = try await self.snapshots.restore(
                id,
                replay: request.replay ?? true,
                on: request.on ?? [:],
                wait: request.wait ?? true,
                progress: progress
            )
            return ControlResponse(
                ok: true,
                manifest: manifest,
                restore: Dictionary(uniqueKeysWithValues: timings.map { ("\($0.key)", $0.value) })
            )
        }
    }

    func statusResponse() async -> ControlResponse {
        do {
            let status = PeerStatus(
                peer: .init(
                    name: self.config.peer.name,
                    id: self.config.peer.id.description,
                    bind: self.switchService.tunnelAddress.displayString,
                    roles: self.config.peer.roles.map(\.rawValue).sorted(),
                    cluster: self.config.cluster.name,
                    session: self.session,
                    uptimeSeconds: self.started.duration(to: .now).inSeconds,
                    version: PeerDaemon.version,
                    pid: getpid()
                ),
                membership: try await self.membership.status(),
                violins: self.config.violins,
                vms: await self.supervisor.status(),
                switch: try await self.switchService.status(),
                store: self.store?.status(),
                splice: self.splice?.status
            )
            return ControlResponse(ok: true, status: status)
        } catch {
            return ControlResponse(ok: false, error: "status failed: \(error)")
        }
    }
}
