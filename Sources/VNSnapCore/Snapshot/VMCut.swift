/// The exact cut of one VM (DESIGN §6, "The cut of one VM, exactly"), as a pure state machine.
///
/// Two queues sit between a VM and its switch and QEMU saves neither, so the shell follows these steps:
/// 1. hold inbound: stop sending to the VM's port, hold what arrives, and wait until QEMU has read what was
///    already sent (its socket's receive queue is empty) or `queueWait` passes;
/// 2. pause: QMP `stop`;
/// 3. drain outbound while the VM is certainly stopped: what is left in the switch's port socket was sent
///    before the cut and is of the old epoch; then the VM's epoch advances;
/// 4. start the snapshot (`migrate` with `background-snapshot`, which resumes the VM by itself);
/// 5. once QEMU reports RESUME and the snapshot has started, release the held frames.
/// Downtime is STOP to RESUME as QEMU reports them, never a guess. A failure after the stop asks the shell
/// to continue the VM, so a failed cut never leaves it paused.
public struct VMCut<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// Where the cut stands.
    public enum Step: Sendable, Hashable {
        case waitingForQueue, stopping, draining, startingSnapshot, done, failed
    }

    /// What the shell must do next.
    public enum Directive: Sendable, Hashable {
        /// Stop sending to the VM's port and hold its inbound frames (`EpochGate.beginCut`).
        case holdInbound
        /// Report whether QEMU's NIC socket still has unread frames (`nicQueueChecked`), now or after a moment.
        case checkNICQueue(at: Instant)
        /// QMP `stop`.
        case stopVM
        /// Start the snapshot on the stopped VM.
        case startSnapshot
        /// Read everything left in the switch's port socket as old-epoch frames, then call `drained`.
        case drainOutbound
        /// The VM is in the new epoch from now on (`EpochGate.finishCut`, outgoing frames coloured anew).
        case advanceEpoch
        /// Release the held frames in order (`EpochGate.released`).
        case releaseHeld
        /// The cut failed with the VM stopped: QMP `cont`, so it runs again.
        case continueVM
        /// The cut failed: end the gate's cut in the old epoch (`EpochGate.cancelCut`) before releasing.
        case cancelCut
        /// The cut is complete: report it.
        case finished(VMCutReport)
        /// The cut failed before the VM was stopped, or QEMU refused: release everything, VM keeps running.
        case failed(String)
    }

    /// The VM.
    public let vm: String
    /// Longest wait for QEMU to read its socket before stopping anyway.
    public let queueWait: Duration
    /// How often the queue is checked meanwhile.
    public let queuePoll: Duration
    /// Whether a frame (not the marker) started this cut.
    public let triggered: Bool
    /// The current step.
    public private(set) var step: Step = .waitingForQueue
    /// Whether QEMU's NIC queue was still not empty when the wait ran out (reported, so benchmarks can say).
    public private(set) var queueWaitExpired = false
    let startedAt: Instant
    var stoppedAtNanoseconds: UInt64?
    var resumedAtNanoseconds: UInt64?
    var snapshotRunning = false

    /// Begins a cut.
    public init(
        vm: String,
        triggered: Bool,
        queueWait: Duration = .milliseconds(20),
        queuePoll: Duration = .milliseconds(1),
        now: Instant
    ) {
        self.vm = vm
        self.triggered = triggered
        self.queueWait = queueWait
        self.queuePoll = queuePoll
        self.startedAt = now
    }

    /// The first directives: hold, then look at QEMU's queue.
    public func start() -> [Directive] {
        [.holdInbound, .checkNICQueue(at: self.startedAt)]
    }

    /// The answer to `checkNICQueue`.
    public mutating func nicQueueChecked(empty: Bool, now: Instant) -> [Directive] {
        guard self.step == .waitingForQueue else { return [] }
        if !empty, self.startedAt.duration(to: now) < self.queueWait {
            return [.checkNICQueue(at: now.advanced(by: self.queuePoll))]
        }
        self.queueWaitExpired = !empty
        self.step = .stopping
        return [.stopVM]
    }

    /// QMP `stop` returned; `atNanoseconds` is QEMU's STOP event time.
    public mutating func stopped(atNanoseconds: UInt64) -> [Directive] {
        guard self.step == .stopping else { return [] }
        self.stoppedAtNanoseconds = atNanoseconds
        self.step = .draining
        return [.drainOutbound]
    }

    /// The switch read every frame left in the port socket (the VM is still stopped): advance the epoch,
    /// then start the snapshot.
    public mutating func outboundDrained() -> [Directive] {
        guard self.step == .draining else { return [] }
        self.step = .startingSnapshot
        return [.advanceEpoch, .startSnapshot]
    }

    /// The snapshot started (QEMU is saving the VM as of the stop).
    public mutating func snapshotStarted() -> [Directive] {
        guard self.step == .startingSnapshot, !self.snapshotRunning else { return [] }
        self.snapshotRunning = true
        return self.resumedAtNanoseconds != nil ? self.finish() : []
    }

    /// QEMU's RESUME event (it may arrive before or after the reply to the snapshot command).
    public mutating func resumed(atNanoseconds: UInt64) -> [Directive] {
        guard self.step == .startingSnapshot, self.resumedAtNanoseconds == nil else { return [] }
        self.resumedAtNanoseconds = atNanoseconds
        return self.snapshotRunning ? self.finish() : []
    }

    /// Something failed (QMP error, QEMU gone): the gate's cut is cancelled, the VM runs again, held frames
    /// go out, and the failure is reported.
    public mutating func fail(_ reason: String) -> [Directive] {
        guard self.step != .done, self.step != .failed else { return [] }
        let wasStopped = self.stoppedAtNanoseconds != nil && self.resumedAtNanoseconds == nil
        self.step = .failed
        var directives: [Directive] = wasStopped ? [.continueVM] : []
        directives += [.cancelCut, .releaseHeld, .failed("\(self.vm): \(reason)")]
        return directives
    }

    private mutating func finish() -> [Directive] {
        self.step = .done
        let stop = self.stoppedAtNanoseconds!  // !-safe, resumed requires it
        let resume = max(stop, self.resumedAtNanoseconds!)  // !-safe, both callers have it
        return [
            .releaseHeld,
            .finished(
                VMCutReport(
                    vm: self.vm,
                    cutAtNanoseconds: stop,
                    downtimeNanoseconds: resume - stop,
                    triggered: self.triggered
                )
            ),
        ]
    }
}
