import Foundation
import Logging
import VNSnapCore

/// `vnsnap-peer move` (issue 14): one VM onto another peer, consistently with the rest of its VIOLIN.
extension SnapshotService {
    /// Moves `vm` to peer `target`: a snapshot of its VIOLIN to store peers' memory (one replica), restored with
    /// the VM placed there (the whole VIOLIN goes back to that cut; the old copy stops at the switch-over; the
    /// initiator records the new owner). The snapshot is deleted once the move has succeeded.
    public func move(
        _ vm: String,
        to target: String,
        violin given: String?,
        progress: @escaping @Sendable (String) async -> Void
    ) async throws -> [RestoreStep: [String: RestoreTimings]] {
        let violin = try await self.violin(of: vm, given: given)
        let view = try await self.membership.view()
        guard let peer = view.alive.first(where: { $0.value == target })?.key else {
            throw SnapshotError(.refused, "move \(vm): no alive peer \(target); nothing was done")
        }
        guard view.vmHosts.contains(peer) else {
            throw SnapshotError(.refused, "move \(vm): \(target) does not have the vm role; nothing was done")
        }
        guard !view.stores.isEmpty else {
            throw SnapshotError(
                .refused,
                "move \(vm): the VM's image goes through a store peer's memory, and no store peer is alive; nothing was done"
            )
        }
        await progress("taking a snapshot of \(violin) to move \(vm) from")
        let manifest = try await self.requestSnapshot(
            violin: violin,
            mode: .cow,
            name: "move \(vm) to \(target)",
            target: SnapshotTarget(kind: .memory, replicas: 1)
        ) { update in
            await progress("snapshot: \(update.phase)\(update.message.isEmpty ? "" : " (\(update.message))")")
        }
        // The snapshot only carries the move: it goes, whatever the restore's outcome.
        let outcome: Result<[RestoreStep: [String: RestoreTimings]], any Error>
        if manifest.vms.contains(where: { $0.name == vm }) {
            do {
                outcome = .success(try await self.restore(manifest.id, on: [vm: target], progress: progress))
            } catch {
                outcome = .failure(error)
            }
        } else {
            outcome = .failure(SnapshotError(.notFound, "move: VIOLIN \(violin) has no VM \(vm); nothing was moved"))
        }
        _ = try? await self.delete(manifest.id)
        let timings = try outcome.get()
        self.logger.notice("VM moved", metadata: ["vm.name": "\(vm)", "vm.owner": "\(target)"])
        return timings
    }

    /// The VIOLIN of `vm`: as given, else its ownership record's, this peer's own VM's, or the newest snapshot's
    /// that has it.
    private func violin(of vm: String, given: String?) async throws -> String {
        if let given { return given }
        if let record = try await self.catalog.owners()[vm] { return record.violin }
        if let definition = self.hosted.definition(vm) { return definition.violin }
        let newest = try await self.catalog.list().sorted { $0.createdAtNanoseconds > $1.createdAtNanoseconds }
        if let manifest = newest.compactMap(\.manifest).first(where: { $0.vms.contains { $0.name == vm } }) {
            return manifest.violin
        }
        throw SnapshotError(.notFound, "move: this peer does not know VM \(vm)'s VIOLIN (give --violin)")
    }
}
