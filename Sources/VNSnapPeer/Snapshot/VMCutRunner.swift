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
    /// Mode `precopy`: the migration already runs; the cut is its final pause, ended by `cont`.
    var precopy: Bool
    /// Mode `precopy`: copies the VM again into a fresh image, when QEMU finished the pre-copy by itself (and
    /// paused the VM) before the cut.
    var restartPrecopy: (@Sendable () async throws -> Void)?
    var logger: Logger

    /// What a finished cut reports.
    struct Outcome: Sendable {
        var report: VMCutReport
        var queueWaitExpired: Bool
    }

    static func wallMicroseconds() -> Int64 {
        Int64(Date().timeIntervalSince1970 * 1_000_000)
    }

    /// Runs the cut; a failure leaves the VM running in its old epoch.
    func run(triggered: Bool) async -> Result<Outcome, SnapshotAbortReason> {
        if self.precopy, let restart = self.restartPrecopy,
            (try? await QEMUSnapshot.status(self.monitor).status) == "completed"
        {
            do {
                // The image is of the moment QEMU paused the VM by itself; run it again and copy it again.
                _ = try await self.monitor.execute("cont")
                try await restart()
            } catch {
                return .failure(
                    SnapshotAbortReason("\(self.vm): copying again after the pre-copy finished early: \(error)")
                )
            }
        }
        var cut = VMCut<ContinuousClock.Instant>(vm: self.vm, triggered: triggered, now: .now)
        var pending = cut.start()[...]
        var stopMicroseconds: Int64 = 0
        while let directive = pending.popFirst() {
            switch directive {
            case .holdInbound:
                try? await self.switchService.beginCut(self.vm)
            case .checkNICQueue(let at):
                if at > .now { try? await Task.sleep(until: at, clock: .continuous) }
                // -2: no such socket (QEMU gone: the stop fails next), -1: no answer; neither holds frames.
                let queued = vnsnap_unix_receive_queue(self.nicSocket)
                pending += cut.nicQueueChecked(empty: queued <= 0, now: .now)
            case .stopVM:
                let since = Self.wallMicroseconds() - 1_000
                do {
                    // QEMU may have finished the pre-copy by itself (pausing the VM) since it was checked. Inbound
                    // frames are held now, so running the VM again and copying it again keeps the cut exact: what
                    // reached its NIC while it was paused is read before the new image's pause.
                    var attempts = 0
                    while self.precopy, let restart = self.restartPrecopy,
                        try await QEMUSnapshot.status(self.monitor).status == "completed"
                    {
                        attempts += 1
                        guard attempts <= 3 else {
                            throw SnapshotError("pre-copy kept finishing by itself before the cut (an idle guest)")
                        }
                        _ = try await self.monitor.execute("cont")
                        try await restart()
                    }
                    _ = try await self.monitor.execute("stop", timeout: .seconds(10))
                    let stop = try await self.monitor.waitForEvent("STOP", since: since, timeout: .seconds(5))
                    stopMicroseconds = stop.timestampMicroseconds
                    pending += cut.stopped(atNanoseconds: UInt64(stop.timestampMicroseconds) * 1_000)
                } catch {
                    pending += cut.fail("QMP stop: \(error)")
                }
            case .drainOutbound:
                _ = try? await self.switchService.drainOutbound(self.vm)
                pending += cut.outboundDrained()
            case .advanceEpoch:
                try? await self.switchService.finishCut(self.vm)
            case .startSnapshot:
                do {
                    if self.precopy {
                        // The stopped VM's last dirty pages go out at full speed; then it sits in `postmigrate`
                        // until `cont`.
                        _ = try await self.monitor.execute(
                            "migrate-set-parameters",
                            arguments: ["max-bandwidth": .number(Double(8 << 30))]
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
                return .success(Outcome(report: report, queueWaitExpired: cut.queueWaitExpired))
            case .failed(let reason):
                self.logger.error("VM cut failed", metadata: ["vm.name": "\(self.vm)", "snapshot.error": "\(reason)"])
                return .failure(SnapshotAbortReason(reason))
            }
        }
        return .failure(SnapshotAbortReason("\(self.vm): the cut ended without a result"))
    }
}
