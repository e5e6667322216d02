import Logging
import VNSnapCore

/// Scheduled snapshots (`[[schedules]]`): while this peer is the initiator it takes each schedule's snapshot of the
/// current slot and deletes, everywhere, what the retention no longer keeps (`ScheduleRunner`); any peer tells
/// where each schedule stands.
extension SnapshotService {
    /// How often the schedules are looked at.
    static let scheduleInterval = Duration.seconds(2)

    /// Carries out what the schedules ask for now.
    func runSchedules() async {
        // Only the initiator takes and prunes: the others need not read the catalog every interval.
        guard !self.schedules.schedules.isEmpty, let view = try? await self.membership.view(),
            view.initiator == self.me, let catalog = await self.scheduleCatalog()
        else { return }
        let now = Self.wallNanoseconds() / 1_000_000_000
        for action in self.schedules.tick(wallSeconds: now, isInitiator: true, catalog: catalog) {
            switch action {
            case .take(let name, let slot, let snapshotName):
                guard let schedule = self.schedules.schedules.first(where: { $0.name == name }) else { continue }
                self.logger.info(
                    "Scheduled snapshot due",
                    metadata: ["schedule": "\(name)", "snapshot.name": "\(snapshotName)"]
                )
                self.spawn({
                    do {
                        let manifest = try await self.requestSnapshot(
                            violin: schedule.violin,
                            mode: schedule.mode,
                            name: snapshotName,
                            target: schedule.target
                        ) { _ in }
                        return Result<UInt64, SnapshotError>.success(manifest.id)
                    } catch {
                        return .failure(error as? SnapshotError ?? SnapshotError(.failed, "\(error)"))
                    }
                }) { outcome in await self.scheduledSnapshotEnded(name, slot: slot, snapshotName, outcome) }
            case .prune(let name, let ids):
                self.spawn({
                    var failures: [String] = []
                    for id in ids {
                        do {
                            // Behind a snapshot of the VIOLIN under way (the schedule's next, often), not refused by it.
                            _ = try await self.delete(id, wait: true)
                        } catch {
                            failures.append("\(id): \(error)")
                        }
                    }
                    return failures
                }) { failures in await self.schedulePruned(name, ids: ids, failures: failures) }
            }
        }
    }

    /// Where each schedule stands, from this peer's catalog.
    public func scheduleStatus() async throws -> [ScheduleRunner.Status] {
        guard let catalog = await self.scheduleCatalog() else {
            throw SnapshotError(.failed, "cannot read the snapshot catalog")
        }
        return self.schedules.status(wallSeconds: Self.wallNanoseconds() / 1_000_000_000, catalog: catalog)
    }

    private func scheduledSnapshotEnded(
        _ name: String,
        slot: UInt64,
        _ snapshotName: String,
        _ outcome: Result<UInt64, SnapshotError>
    ) async {
        let now = Self.wallNanoseconds() / 1_000_000_000
        switch outcome {
        case .success(let id):
            self.logger.info(
                "Scheduled snapshot committed",
                metadata: ["schedule": "\(name)", "snapshot.name": "\(snapshotName)", "snapshot.id": "\(id)"]
            )
            self.schedules.finished(schedule: name, slot: slot, error: nil, wallSeconds: now)
        case .failure(let error):
            self.logger.warning(
                "Scheduled snapshot failed; tried again later in its slot",
                metadata: ["schedule": "\(name)", "snapshot.name": "\(snapshotName)", "snapshot.error": "\(error)"]
            )
            self.schedules.finished(schedule: name, slot: slot, error: error.message, wallSeconds: now)
        }
    }

    private func schedulePruned(_ name: String, ids: [UInt64], failures: [String]) async {
        if failures.isEmpty {
            self.logger.info("Pruned scheduled snapshots", metadata: ["schedule": "\(name)", "snapshot.ids": "\(ids)"])
        } else {
            self.logger.warning(
                "Pruning scheduled snapshots failed for some",
                metadata: ["schedule": "\(name)", "snapshot.failures": "\(failures)"]
            )
        }
        self.schedules.pruned(schedule: name, ids: ids)
    }

    /// The committed snapshots of the catalog, as the schedules see them.
    private func scheduleCatalog() async -> [ScheduleRunner.Known]? {
        guard let entries = try? await self.catalog.list() else { return nil }
        return entries.map {
            ScheduleRunner.Known(id: $0.id, name: $0.name, wallSeconds: $0.createdAtNanoseconds / 1_000_000_000)
        }
    }
}
