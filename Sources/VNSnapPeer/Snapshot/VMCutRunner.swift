import CVNSnapSys
import Foundation
import Logging
import VNSnapCore
import VNSnapHypervisor

/// Carries out one VM's exact cut (`VMCut`, DESIGN §6) with QMP and the switch.
struct VMCutRunner: Sendable {
    var vm: String
    var monitor: QMPClient
    var switchService: SwitchService
    /// QEMU's NIC socket, whose receive queue is checked before the pause.
    var nicSocket: String
    /// Where QEMU sends the image (`unix:/path` of the image writer).
    var uri: String
    /// Mode `precopy`: the cut is the pause at the end of a normal (live) migration, held before its
    /// switch-over; inbound frames are held during the whole pre-copy, so the cut stays exact.
    var precopy: Bool
    /// The VM's disk, frozen at the pause, if it has one.
    var disk: DiskFreeze?
    var logger: Logger

    /// Freezing a VM's disk at its pause: the VM goes on writing to `overlay`, recorded in `layers`.
    struct DiskFreeze: Sendable {
        var layers: DiskLayers
        var configured: VMDefinition.Disk
        var overlay: String
    }

    /// What a finished cut reports.
    struct Outcome: Sendable {
        var report: VMCutReport
        var queueWaitExpired: Bool
        /// The disk as frozen at the pause (the frozen image, then its backing files); empty without a disk.
        var disk: [VMDefinition.Disk] = []
    }

    /// On the paused VM: freezes its disk and records the overlay it continues on. A failure to record fails
    /// the cut: a restarted peer would run the VM on the frozen image and lose its newer writes.
    private func freezeDisk() async throws {
        guard let disk = self.disk else { return }
        let overlay = VMDefinition.Disk(path: disk.overlay, format: "qcow2")
        do {
            try await QEMUDisk.freeze(self.monitor, overlay: disk.overlay)
        } catch {
            // A freeze that timed out may still have happened: the record must follow what QEMU writes to.
            if let chain = try? await QEMUDisk.chain(self.monitor), chain.first?.path == disk.overlay {
                try? disk.layers.setActive(overlay, vm: self.vm, configured: disk.configured)
            }
            throw error
        }
        try disk.layers.setActive(overlay, vm: self.vm, configured: disk.configured)
    }

    /// Mode `precopy`: a live migration into the image writer until QEMU pauses the VM before its
    /// switch-over — by itself once converged, or because this peer stops the VM after the first full pass.
    private func precopyUntilPaused() async throws {
        try await QEMUSnapshot.start(self.monitor, uri: self.uri)
        let deadline = ContinuousClock.now + .seconds(120)
        var stopped = false
        while ContinuousClock.now < deadline {
            let reply = try await self.monitor.execute("query-migrate")
            switch reply["status"]?.stringValue ?? "none" {
            case "pre-switchover":
                return
            case "failed", "cancelled":
                throw SnapshotError(
                    .failed,
                    "migration \(reply["status"]?.stringValue ?? ""): \(reply["error-desc"]?.stringValue ?? "")"
                )
            default:
                if !stopped, (reply["ram"]?["dirty-sync-count"]?.intValue ?? 0) >= 2 {
                    // RAM went out once; what the guest dirties meanwhile goes in the final pause.
                    _ = try await self.monitor.execute("stop", timeout: .seconds(10))
                    stopped = true
                }
                try await Task.sleep(for: .milliseconds(2))
            }
        }
        throw SnapshotError(.timeout, "pre-copy did not reach its switch-over within 120 s")
    }

    static func wallMicroseconds() -> Int64 {
        Int64(Date().timeIntervalSince1970 * 1_000_000)
    }

    /// Runs the cut; a failure leaves the VM running in its old epoch.
    func run(triggered: Bool) async -> Result<Outcome, SnapshotAbortReason> {
        var cut = VMCut<ContinuousClock.Instant>(vm: self.vm, triggered: triggered, now: .now)
        var pending = cut.start()[...]
        var stopMicroseconds: Int64 = 0
        // Step times (wall µs), logged with the outcome so cut skew can be taken apart.
        let began = Self.wallMicroseconds()
        var held: Int64 = 0
        var stopSent: Int64 = 0
        while let directive = pending.popFirst() {
            switch directive {
            case .holdInbound:
                try? await self.switchService.beginCut(self.vm)
                held = Self.wallMicroseconds()
            case .checkNICQueue(let at):
                if at > .now { try? await Task.sleep(until: at, clock: .continuous) }
                // -2: no such socket (QEMU gone: the stop fails next), -1: no answer; neither holds frames.
                let queued = vnsnap_unix_receive_queue(self.nicSocket)
                pending += cut.nicQueueChecked(empty: queued <= 0, now: .now)
            case .stopVM:
                stopSent = Self.wallMicroseconds()
                let since = stopSent - 1_000
                do {
                    if self.precopy {
                        try await self.precopyUntilPaused()
                    } else {
                        _ = try await self.monitor.execute("stop", timeout: .seconds(10))
                    }
                    let stop = try await self.monitor.waitForEvent("STOP", since: since, timeout: .seconds(5))
                    stopMicroseconds = stop.timestampMicroseconds
                    pending += cut.stopped(atNanoseconds: UInt64(stop.timestampMicroseconds) * 1_000)
                } catch {
                    pending += cut.fail("\(self.precopy ? "pre-copy" : "QMP stop"): \(error)")
                }
            case .drainOutbound:
                _ = try? await self.switchService.drainOutbound(self.vm)
                pending += cut.outboundDrained()
            case .advanceEpoch:
                try? await self.switchService.finishCut(self.vm)
            case .startSnapshot:
                do {
                    try await self.freezeDisk()
                    if self.precopy {
                        // Past the switch-over: the last dirty pages and the device state go out; then the VM
                        // sits in `postmigrate` until `cont`.
                        _ = try await self.monitor.execute(
                            "migrate-continue",
                            arguments: ["state": .string("pre-switchover")]
                        )
                        try await QEMUSnapshot.waitCompleted(self.monitor, timeout: .seconds(120))
                        _ = try await self.monitor.execute("cont")
                    } else {
                        try await QEMUSnapshot.start(self.monitor, uri: self.uri)
                    }
                    pending += cut.snapshotStarted()
                    let resume = try await self.monitor.waitForEvent(
                        "RESUME",
                        since: stopMicroseconds,
                        timeout: .seconds(30)
                    )
                    pending += cut.resumed(atNanoseconds: UInt64(resume.timestampMicroseconds) * 1_000)
                } catch {
                    pending += cut.fail("starting the snapshot: \(error)")
                }
            case .releaseHeld:
                try? await self.switchService.releaseHeld(self.vm)
            case .continueVM:
                _ = try? await self.monitor.execute("cont")
            case .cancelCut:
                try? await self.switchService.cancelCut(self.vm)
            case .finished(let report):
                self.logger.info(
                    "VM cut timed",
                    metadata: [
                        "vm.name": "\(self.vm)", "cut.began.us": "\(began)",
                        "cut.hold.us": "\(held - began)", "cut.queue.us": "\(stopSent - held)",
                        "cut.stop.us": "\(stopMicroseconds - stopSent)", "cut.at.us": "\(stopMicroseconds)",
                        "cut.downtime.us": "\(report.downtimeNanoseconds / 1_000)",
                    ]
                )
                var outcome = Outcome(report: report, queueWaitExpired: cut.queueWaitExpired)
                if self.disk != nil {
                    do {
                        outcome.disk = Array(try await QEMUDisk.chain(self.monitor).dropFirst())
                    } catch {
                        return .failure(SnapshotAbortReason("\(self.vm): reading its disk chain: \(error)"))
                    }
                }
                return .success(outcome)
            case .failed(let reason):
                self.logger.error("VM cut failed", metadata: ["vm.name": "\(self.vm)", "snapshot.error": "\(reason)"])
                return .failure(SnapshotAbortReason(reason))
            }
        }
        return .failure(SnapshotAbortReason("\(self.vm): the cut ended without a result"))
    }
}
