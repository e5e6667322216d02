/// Runs snapshot schedules on the initiator: which slot to take now, when to try a failed one again, and what the
/// retention prunes. Pure: the caller passes the wall time and the snapshots of its catalog, and carries out the
/// actions (a successor initiator, with the same catalog, carries on where its predecessor stopped).
///
/// Only the current slot is ever taken: slots missed while no peer was initiator are not made up for, so a failover
/// costs at most one snapshot, taken once. Two snapshots of one slot (a new initiator that had not yet heard of its
/// predecessor's) are pruned to the first.
public struct ScheduleRunner: Sendable {
    /// What to carry out.
    public enum Action: Sendable, Hashable {
        /// Take schedule `schedule`'s snapshot for the slot starting at `slot`, named `name`.
        case take(schedule: String, slot: UInt64, name: String)
        /// Delete these snapshots everywhere: the retention no longer keeps them.
        case prune(schedule: String, ids: [UInt64])
    }

    /// A committed snapshot of the catalog.
    public struct Known: Sendable, Hashable {
        /// Its id.
        public var id: UInt64
        /// Its name.
        public var name: String
        /// When it was taken, in seconds since the Unix epoch.
        public var wallSeconds: UInt64

        /// Creates one.
        public init(id: UInt64, name: String, wallSeconds: UInt64) {
            self.id = id
            self.name = name
            self.wallSeconds = wallSeconds
        }
    }

    /// Where a schedule stands, for `vnsnap-peer schedules`.
    public struct Status: Sendable, Hashable, Codable {
        /// The schedule.
        public var schedule: SnapshotSchedule
        /// The newest snapshot's slot, and its id.
        public var lastSlot: UInt64?
        /// The newest snapshot's id.
        public var lastID: UInt64?
        /// When the next snapshot is due (seconds since the epoch; now or earlier: due).
        public var nextSlot: UInt64
        /// Whether one is being taken now (on this peer).
        public var running: Bool
        /// How many of its snapshots exist.
        public var snapshots: Int
        /// Why the last attempt failed, while its slot lasts.
        public var lastError: String?
    }

    private struct Progress: Sendable {
        var running: UInt64?
        var failedSlot: UInt64?
        var failedAt: UInt64 = 0
        var lastError: String?
        var pruning: Set<UInt64> = []
    }

    /// The schedules, in configuration order.
    public let schedules: [SnapshotSchedule]
    private var progress: [String: Progress] = [:]

    /// Creates a runner.
    public init(schedules: [SnapshotSchedule]) {
        self.schedules = schedules
    }

    /// How long a failed slot waits before it is tried again: a quarter of the interval, 10 s to 5 min.
    public static func retrySeconds(_ schedule: SnapshotSchedule) -> UInt64 {
        min(max(schedule.everySeconds / 4, 10), 300)
    }

    /// What to do at `now`; only the initiator takes and prunes.
    public mutating func tick(wallSeconds now: UInt64, isInitiator: Bool, catalog: [Known]) -> [Action] {
        guard isInitiator else { return [] }
        var actions: [Action] = []
        for schedule in self.schedules {
            var progress = self.progress[schedule.name] ?? Progress()
            let mine = Self.snapshots(of: schedule, in: catalog)
            let current = schedule.slot(containing: now)
            // A slot at or past the current one taken (by a predecessor whose clock ran ahead, too) is taken.
            let taken = mine.contains { $0.slot >= current }
            let waiting = progress.failedSlot == current && now < progress.failedAt + Self.retrySeconds(schedule)
            if !taken, progress.running == nil, !waiting {
                progress.running = current
                actions.append(
                    .take(schedule: schedule.name, slot: current, name: schedule.snapshotName(slot: current))
                )
            }
            let doomed = Self.unkept(mine, by: schedule.retention).subtracting(progress.pruning)
            if !doomed.isEmpty {
                progress.pruning.formUnion(doomed)
                actions.append(.prune(schedule: schedule.name, ids: doomed.sorted()))
            }
            self.progress[schedule.name] = progress
        }
        return actions
    }

    /// A `take` has ended: committed (`error == nil`) or not.
    public mutating func finished(schedule: String, slot: UInt64, error: String?, wallSeconds now: UInt64) {
        guard var progress = self.progress[schedule], progress.running == slot else { return }
        progress.running = nil
        if let error {
            progress.failedSlot = slot
            progress.failedAt = now
            progress.lastError = error
        } else {
            progress.failedSlot = nil
            progress.lastError = nil
        }
        self.progress[schedule] = progress
    }

    /// A `prune` has ended; the ids still in the catalog are pruned again at a later tick.
    public mutating func pruned(schedule: String, ids: [UInt64]) {
        self.progress[schedule]?.pruning.subtract(ids)
    }

    /// Where every schedule stands at `now`.
    public func status(wallSeconds now: UInt64, catalog: [Known]) -> [Status] {
        self.schedules.map { schedule in
            let progress = self.progress[schedule.name] ?? Progress()
            let mine = Self.snapshots(of: schedule, in: catalog)
            let last = mine.max { ($0.slot, $0.known.wallSeconds) < ($1.slot, $1.known.wallSeconds) }
            let current = schedule.slot(containing: now)
            var next = current
            if let last, last.slot >= current {
                next = last.slot + schedule.everySeconds
            } else if progress.failedSlot == current {
                next = progress.failedAt + Self.retrySeconds(schedule)
            }
            return Status(
                schedule: schedule,
                lastSlot: last?.slot,
                lastID: last?.known.id,
                nextSlot: next,
                running: progress.running != nil,
                snapshots: mine.count,
                lastError: progress.failedSlot == current ? progress.lastError : nil
            )
        }
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Retention

    private static func snapshots(of schedule: SnapshotSchedule, in catalog: [Known]) -> [(slot: UInt64, known: Known)]
    {
        catalog.compactMap { known in schedule.slot(ofSnapshotNamed: known.name).map { ($0, known) } }
    }

    /// The snapshots the retention does not keep: per slot all but the first taken, then what the rule drops.
    private static func unkept(_ mine: [(slot: UInt64, known: Known)], by retention: SnapshotRetention) -> Set<UInt64> {
        var firstOfSlot: [UInt64: Known] = [:]
        for (slot, known) in mine {
            if let other = firstOfSlot[slot], (other.wallSeconds, other.id) <= (known.wallSeconds, known.id) {
                continue
            }
            firstOfSlot[slot] = known
        }
        let candidates = firstOfSlot.map { SnapshotRetention.Taken(id: $0.value.id, wallSeconds: $0.key) }
        return Set(mine.map(\.known.id)).subtracting(retention.kept(candidates))
    }
}
