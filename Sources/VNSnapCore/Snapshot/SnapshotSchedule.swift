/// A snapshot taken on a schedule: a VIOLIN every `every`, in slots aligned to the Unix epoch (UTC), with a
/// retention that prunes what it no longer keeps.
public struct SnapshotSchedule: Sendable, Hashable, Codable {
    /// The schedule's name; its snapshots are named `NAME@SLOT` (the slot's start, UTC).
    public var name: String
    /// The VIOLIN it snapshots.
    public var violin: String
    /// Seconds between slots.
    public var everySeconds: UInt64
    /// How each snapshot is taken.
    public var mode: SnapshotMode
    /// Where its images go.
    public var target: SnapshotTarget
    /// What is kept.
    public var retention: SnapshotRetention

    /// Shortest interval: a snapshot of a VIOLIN takes seconds here (TCG guests), and slots must not overlap.
    public static let shortestEverySeconds: UInt64 = 10

    /// Creates a schedule.
    public init(
        name: String,
        violin: String,
        everySeconds: UInt64,
        mode: SnapshotMode,
        target: SnapshotTarget,
        retention: SnapshotRetention
    ) {
        self.name = name
        self.violin = violin
        self.everySeconds = max(everySeconds, Self.shortestEverySeconds)
        self.mode = mode
        self.target = target
        self.retention = retention
    }

    /// The start of the slot holding `wallSeconds` (seconds since the Unix epoch).
    public func slot(containing wallSeconds: UInt64) -> UInt64 {
        wallSeconds / self.everySeconds * self.everySeconds
    }

    /// The name of this schedule's snapshot for the slot starting at `slot`.
    public func snapshotName(slot: UInt64) -> String {
        "\(self.name)@\(UTCTime.iso8601(seconds: slot))"
    }

    /// The slot of one of this schedule's snapshots, from its name; `nil` for any other name.
    public func slot(ofSnapshotNamed name: String) -> UInt64? {
        let prefix = self.name + "@"
        guard name.hasPrefix(prefix) else { return nil }
        return UTCTime.seconds(iso8601: String(name.dropFirst(prefix.count)))
    }

    /// Reads an interval such as `90s`, `15m`, `1h` or `1d`; `nil` if it is not one.
    public static func seconds(interval text: String) -> UInt64? {
        let units: [Character: UInt64] = ["s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800]
        guard let unit = text.last.flatMap({ units[$0] }), let count = UInt64(text.dropLast()), count > 0 else {
            return nil
        }
        let (seconds, overflow) = count.multipliedReportingOverflow(by: unit)
        return overflow ? nil : seconds
    }
}

/// Which of a schedule's snapshots stay: the newest `keepLast`, and the newest of each of the last `keepHourly` UTC
/// hours and `keepDaily` UTC days that have one (restic's and borg's rule).
public struct SnapshotRetention: Sendable, Hashable, Codable {
    /// Newest snapshots kept.
    public var keepLast: Int
    /// Hours (with a snapshot) whose newest is kept.
    public var keepHourly: Int
    /// Days (with a snapshot) whose newest is kept.
    public var keepDaily: Int

    /// Creates a retention.
    public init(keepLast: Int = 0, keepHourly: Int = 0, keepDaily: Int = 0) {
        self.keepLast = max(0, keepLast)
        self.keepHourly = max(0, keepHourly)
        self.keepDaily = max(0, keepDaily)
    }

    /// One of the schedule's committed snapshots.
    public struct Taken: Sendable, Hashable {
        /// Its id.
        public var id: UInt64
        /// When it was taken, in seconds since the Unix epoch.
        public var wallSeconds: UInt64

        /// Creates one.
        public init(id: UInt64, wallSeconds: UInt64) {
            self.id = id
            self.wallSeconds = wallSeconds
        }
    }

    /// The ids of `snapshots` this retention keeps.
    public func kept(_ snapshots: [Taken]) -> Set<UInt64> {
        let newestFirst = snapshots.sorted { ($0.wallSeconds, $0.id) > ($1.wallSeconds, $1.id) }
        var kept = Set(newestFirst.prefix(self.keepLast).map(\.id))
        for (count, bucket) in [(self.keepHourly, UInt64(3600)), (self.keepDaily, UInt64(86_400))] where count > 0 {
            var seen: Set<UInt64> = []
            for snapshot in newestFirst where seen.count < count {
                if seen.insert(snapshot.wallSeconds / bucket).inserted { kept.insert(snapshot.id) }
            }
        }
        return kept
    }
}
