/// The exact cut of one VM (DESIGN §6, "The cut of one VM, exactly"), as a pure state machine.
///
/// Two queues sit between a VM and its switch and QEMU saves neither, so the shell follows these steps:
/// 1. hold inbound: stop sending to the VM's port, hold what arrives, and wait until QEMU has read what was
///    already sent (its socket's receive queue is empty) or `queueWait` passes;
/// 2. pause: QMP `stop`, then start the snapshot (`migrate` with `background-snapshot`, or the precopy's final
///    stage) — QEMU resumes the VM by itself;
/// 3. drain outbound: while stopped, read what is left in the switch's port socket: those frames are of the
///    old epoch; only then does the VM's epoch change;
/// 4. once QEMU reports RESUME, release the held frames.
/// Downtime is STOP to RESUME as QEMU reports them, never a guess.
public struct VMCut<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// Where the cut stands.
    public enum Step: Sendable, Hashable {
        case waitingForQueue, stopping, startingSnapshot, draining, waitingForResume, done, failed
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
    var drained = false

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
        self.step = .startingSnapshot
        return [.startSnapshot]
    }

    /// The snapshot started (QEMU is saving the VM as of the stop).
    public mutating func snapshotStarted() -> [Directive] {
        guard self.step == .startingSnapshot else { return [] }
        self.step = .draining
        return [.drainOutbound]
    }

    /// The switch read every frame left in the port socket.
    public mutating func outboundDrained() -> [Directive] {
        guard self.step == .draining else { return [] }
        self.drained = true
        self.step = .waitingForResume
        var directives: [Directive] = [.advanceEpoch]
        // QEMU may have resumed the VM before the drain finished: then everything is done now.
        if self.resumedAtNanoseconds != nil { directives += self.finish() }
        return directives
    }

    /// QEMU's RESUME event (it may come before the drain is over: the VM runs again, its new frames wait in
    /// the port socket behind the old ones, which are read first).
    public mutating func resumed(atNanoseconds: UInt64) -> [Directive] {
        guard self.stoppedAtNanoseconds != nil, self.resumedAtNanoseconds == nil else { return [] }
        self.resumedAtNanoseconds = atNanoseconds
        return self.step == .waitingForResume ? self.finish() : []
    }

    /// Something failed (QMP error, QEMU gone): the VM keeps (or starts) running, held frames go out.
    public mutating func fail(_ reason: String) -> [Directive] {
        guard self.step != .done, self.step != .failed else { return [] }
        self.step = .failed
        return [.releaseHeld, .failed("\(self.vm): \(reason)")]
    }

    private mutating func finish() -> [Directive] {
        self.step = .done
        let stop = self.stoppedAtNanoseconds!  // !-safe, resumed requires it
        let resume = max(stop, self.resumedAtNanoseconds!)  // !-safe, the callers check it
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
