import ArgumentParser
import Foundation
import VNSnapCore
import VNSnapPeer

/// `vnsnap-peer schedules`: the configured snapshot schedules, with their last and next run.
struct SchedulesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schedules",
        abstract: "List the snapshot schedules ([[schedules]] in the config) with their last and next run.",
        discussion: """
            The initiator takes each schedule's snapshot once per slot (slots are aligned to the Unix epoch, UTC) and \
            deletes, on every peer, the schedule's snapshots its retention no longer keeps. What is shown comes from \
            this peer's catalog.

            \(PeerSocketOptions.socketDiscussion)
            """
    )

    @OptionGroup var peer: PeerSocketOptions

    @Flag(name: .long, help: "Print JSON (stable field names).")
    var json = false

    func run() async throws {
        let response = try await self.peer.send(ControlRequest(command: "schedules"))
        let schedules = response.schedules ?? []
        if self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(schedules), as: UTF8.self))
            return
        }
        print(Self.table(schedules, now: UInt64(Date().timeIntervalSince1970)), terminator: "")
        for note in response.notes ?? [] { print(note) }
    }

    static func table(_ schedules: [ScheduleRunner.Status], now: UInt64) -> String {
        guard !schedules.isEmpty else { return "no schedules configured\n" }
        var rows = [["NAME", "VIOLIN", "EVERY", "MODE", "TARGET", "KEEP", "SNAPSHOTS", "LAST", "NEXT"]]
        for status in schedules {
            let schedule = status.schedule
            let retention = schedule.retention
            let keep = [("last", retention.keepLast), ("hourly", retention.keepHourly), ("daily", retention.keepDaily)]
                .filter { $0.1 > 0 }.map { "\($0.0) \($0.1)" }.joined(separator: ", ")
            var next = status.nextSlot <= now ? "due" : UTCTime.iso8601(seconds: status.nextSlot)
            if status.running { next = "running" }
            if let error = status.lastError { next += " (last try failed: \(error))" }
            rows.append([
                schedule.name, schedule.violin, "\(schedule.everySeconds) s", schedule.mode.rawValue,
                "\(schedule.target)", keep, "\(status.snapshots)",
                status.lastSlot.map { "\(UTCTime.iso8601(seconds: $0)) (\(status.lastID ?? 0))" } ?? "never", next,
            ])
        }
        return SnapshotFormatter.columns(rows)
    }
}
