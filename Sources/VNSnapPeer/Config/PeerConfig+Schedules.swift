import VNSnapCore

/// `[[schedules]]`: snapshots taken on a schedule, with their retention.
extension PeerConfig {
    /// Kept when a schedule sets no retention: a day of hourly snapshots.
    static let defaultKeepLast = 24

    static func parseSchedule(_ table: inout TOMLReader, violins: [Violin]) throws(ConfigError)
        -> SnapshotSchedule
    {
        let name = try table.requiredString("name")
        try Self.checkName(name, table, "name")
        let violin = try Self.violinName(&table, violins: violins)
        let everyText = try table.requiredString("every")
        guard let every = SnapshotSchedule.seconds(interval: everyText) else {
            throw table.error(
                "every",
                "\"\(everyText)\" is not an interval: a whole number and s, m, h, d or w (e.g. \"1h\")"
            )
        }
        guard every >= SnapshotSchedule.shortestEverySeconds else {
            throw table.error("every", "\(everyText) is shorter than \(SnapshotSchedule.shortestEverySeconds) s")
        }
        let modeText = try table.string("mode") ?? SnapshotMode.cow.rawValue
        guard let mode = SnapshotMode(rawValue: modeText) else {
            let valid = SnapshotMode.allCases.map(\.rawValue).joined(separator: ", ")
            throw table.error("mode", "\"\(modeText)\" is not one of \(valid)")
        }
        let kindText = try table.string("target") ?? SnapshotTarget.Kind.disk.rawValue
        guard let kind = SnapshotTarget.Kind(rawValue: kindText) else {
            throw table.error("target", "\"\(kindText)\" is not one of disk, memory")
        }
        let replicas = try table.int("replicas")
        if replicas != nil, kind == .disk { throw table.error("replicas", "only valid with target = \"memory\"") }
        if let replicas, !(1...16).contains(replicas) {
            throw table.error("replicas", "\(replicas) is out of range 1...16")
        }
        var keep: [String: Int] = [:]
        for key in ["keep_last", "keep_hourly", "keep_daily"] {
            guard let value = try table.int(key) else { continue }
            guard (0...100_000).contains(value) else { throw table.error(key, "\(value) is out of range 0...100000") }
            keep[key] = value
        }
        if !keep.isEmpty, keep.values.allSatisfy({ $0 == 0 }) {
            throw table.error(
                nil,
                "keep_last, keep_hourly and keep_daily keep nothing: each snapshot would be deleted once taken"
            )
        }
        try table.rejectUnknownKeys()
        return SnapshotSchedule(
            name: name,
            violin: violin,
            everySeconds: every,
            mode: mode,
            target: SnapshotTarget(kind: kind, replicas: replicas ?? 2),
            retention: SnapshotRetention(
                keepLast: keep.isEmpty ? Self.defaultKeepLast : keep["keep_last"] ?? 0,
                keepHourly: keep["keep_hourly"] ?? 0,
                keepDaily: keep["keep_daily"] ?? 0
            )
        )
    }
}
