import VNSnapCore

/// QEMU's side of a cut (DESIGN §6, §9): background snapshots over QMP.
///
/// `background-snapshot` saves RAM copy-on-write as of the moment the migration starts; started on a
/// stopped VM, QEMU resumes the VM by itself once the device state is saved, so the pause is STOP to RESUME.
/// The stream goes to `uri` (`unix:/path` where the peer's image writer listens).
public enum QEMUSnapshot {
    /// Turns the background-snapshot capability on (needs /dev/userfaultfd, i.e. root here).
    public static func enableBackgroundSnapshot(_ monitor: QMPClient) async throws {
        try await self.setCapabilities(monitor, ["background-snapshot": true])
    }

    /// Sets migration capabilities (`background-snapshot`, `pause-before-switchover`, ...).
    public static func setCapabilities(_ monitor: QMPClient, _ capabilities: [String: Bool]) async throws {
        _ = try await monitor.execute(
            "migrate-set-capabilities",
            arguments: [
                "capabilities": .array(
                    capabilities.sorted { $0.key < $1.key }.map {
                        .object(["capability": .string($0.key), "state": .bool($0.value)])
                    }
                )
            ]
        )
    }

    /// Sets migration parameters (`max-bandwidth` in bytes per second, `downtime-limit` in ms, ...).
    public static func setParameters(_ monitor: QMPClient, _ parameters: [String: Double]) async throws {
        _ = try await monitor.execute("migrate-set-parameters", arguments: parameters.mapValues { .number($0) })
    }

    /// Starts saving the VM to `uri`. QEMU refuses a migration while the last one's clean-up has not run yet
    /// ("Migration is not finalized yet", a moment after `query-migrate` says completed): that is retried for up
    /// to `settle`, anything else is thrown at once.
    public static func start(_ monitor: QMPClient, uri: String, settle: Duration = .seconds(2)) async throws {
        let deadline = ContinuousClock.now + settle
        while true {
            do {
                _ = try await monitor.execute("migrate", arguments: ["uri": .string(uri)])
                return
            } catch let error as QMPError where error.message.contains("not finalized yet") {
                guard ContinuousClock.now < deadline else { throw error }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    /// On a QEMU started with `incoming`: listen at `uri` (`unix:/path`) for the saved state; the restorer
    /// connects there and writes the verified stream. With `-S` the VM stays paused afterwards.
    public static func restore(_ monitor: QMPClient, uri: String) async throws {
        _ = try await monitor.execute("migrate-incoming", arguments: ["uri": .string(uri)])
    }

    /// The migration's status (`active`, `completed`, `failed`, ...), with QEMU's error if it failed.
    public static func status(_ monitor: QMPClient) async throws -> (status: String, error: String?) {
        let reply = try await monitor.execute("query-migrate")
        return (reply["status"]?.stringValue ?? "none", reply["error-desc"]?.stringValue)
    }

    /// Polls until the migration completes; throws with QEMU's reason if it fails or `timeout` passes.
    public static func waitCompleted(_ monitor: QMPClient, timeout: Duration = .seconds(120)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let (status, error) = try await self.status(monitor)
            switch status {
            case "completed": return
            case "failed", "cancelled": throw QMPError(.commandFailed, "migrate: \(error ?? status)")
            default: try await Task.sleep(for: .milliseconds(20))
            }
        }
        throw QMPError(.timeout, "migrate: not completed within \(timeout)")
    }
}
