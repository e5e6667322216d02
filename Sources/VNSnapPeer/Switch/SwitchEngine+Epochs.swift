import NIOCore
import VNSnapCore

#if canImport(Glibc)
import Glibc
#endif

/// A frame held while its VM is cut.
struct HeldFrame {
    var frame: ByteBuffer
    var epoch: UInt32
}

/// Frames per epoch on one tunnel and VIOLIN (a handful of epochs at most are ever live).
struct EpochCounts {
    private(set) var counts: [UInt32: UInt64] = [:]

    mutating func add(_ epoch: UInt32) {
        self.counts[epoch, default: 0] &+= 1
    }

    /// Frames of every epoch before `epoch`.
    func below(_ epoch: UInt32) -> UInt64 {
        self.counts.reduce(0) { $1.key < epoch ? $0 &+ $1.value : $0 }
    }
}

/// One port's part of an armed snapshot: its stall measurement and its channel log (DESIGN §6, §8).
struct PortSnapshot {
    /// The epoch the snapshot moves the VM to.
    var epoch: UInt32
    /// When it was armed, monotonic nanoseconds.
    var armedAt: UInt64
    /// When the cut finished (the VM is in the new epoch).
    var cutAt: UInt64?
    /// Recorded in-flight frames of the old epoch, in arrival order.
    var log: [ByteBuffer] = []
    var logBytes = 0
    /// Frames not recorded because the log was full (the snapshot cannot be exact then).
    var logOverflow: UInt64 = 0
    /// Payload frames seen from or to the VM: the longest gap between two is the stall.
    var lastPayload: UInt64?
    var longestGap: UInt64 = 0
    /// When the longest gap ended.
    var longestGapEnd: UInt64 = 0
    var measuring = true
    /// Set for `vnsnap-peer stall`'s measurement (no snapshot): any snapshot takes the port over from it.
    var stallOnly = false

    /// Where the longest gap began relative to the cut, nanoseconds (negative: before it).
    var stallStartAfterCut: Int64? {
        guard let cutAt = self.cutAt, self.longestGap > 0 else { return nil }
        return Int64(bitPattern: (self.longestGapEnd &- self.longestGap) &- cutAt)
    }
}

/// The channel drain of one VIOLIN's armed snapshot on this peer: done when every remote sender's marker
/// count is matched and every local VM of the plan is cut (local channels then hold nothing of the old epoch).
struct ViolinDrain {
    var epoch: UInt32
    var drain: ChannelDrain
    var localPending: Set<Int>
    var drainedAt: UInt64?
}

/// What the switch measured and recorded for one VM's snapshot.
public struct PortSnapshotReport: Sendable, Hashable {
    /// The VM.
    public var vm: String
    /// Frames held, dropped and recorded by its gate.
    public var counters: EpochGate.Counters
    /// The longest gap in its payload frames from arming until now, nanoseconds.
    public var stall: UInt64
    /// Where that gap began relative to the VM's cut, nanoseconds (negative: before it); `nil` without a cut.
    public var stallStartAfterCut: Int64?
    /// The recorded frames (the channel state into this VM), in arrival order.
    public var log: [[UInt8]]
    /// Frames that did not fit the log.
    public var logOverflow: UInt64
    /// Whether every channel into its VIOLIN is drained; if not, frames announced and still missing per peer.
    public var drained: Bool
    /// Frames announced by end-of-epoch markers but never received, per sender.
    public var missing: [String: UInt64]
}

/// The switch's part of snapshots (DESIGN §6): epoch gates per port, held frames, channel logs, end-of-epoch
/// markers and stall measurement.
extension SwitchEngine {
    /// Bytes of channel log kept per port.
    static let channelLogLimit = 64 << 20

    static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    func portIndex(_ vm: String) -> Int? {
        self.ports.firstIndex { $0.vm == vm }
    }

    /// A frame for a local port, of its sender's `epoch`: through the port's epoch gate.
    func deliver(_ frame: ByteBuffer, to port: PortID, epoch: UInt32) {
        let index = port.rawValue
        if self.ports[index].snapshot == nil, self.ports[index].gate.armed == nil, self.ports[index].gate.held == 0,
            !self.ports[index].gate.cutting
        {
            self.sendToPort(port, frame: frame)
            return
        }
        switch self.ports[index].gate.inbound(frameEpoch: epoch) {
        case .deliver:
            self.deliverNow(frame, to: port, record: false)
        case .deliverAndRecord:
            self.deliverNow(frame, to: port, record: true)
        case .hold:
            self.hold(frame, epoch: epoch, on: port)
        case .holdAndTriggerCut:
            self.hold(frame, epoch: epoch, on: port)
            self.onTrigger?(self.ports[index].vm)
        case .drop(let reason):
            self.ports[index].counters.dropped(reason == .holdFull ? .holdFull : .epochPolicy)
        }
    }

    private func hold(_ frame: ByteBuffer, epoch: UInt32, on port: PortID) {
        var copy = self.allocator.buffer(capacity: frame.readableBytes)
        copy.writeImmutableBuffer(frame)
        self.ports[port.rawValue].heldFrames.append(HeldFrame(frame: copy, epoch: epoch))
        self.ports[port.rawValue].heldTotal &+= 1
    }

    private func deliverNow(_ frame: ByteBuffer, to port: PortID, record: Bool) {
        let index = port.rawValue
        if self.ports[index].snapshot != nil {
            self.notePayload(port, length: frame.readableBytes)
            if record {
                if self.ports[index].snapshot!.logBytes + frame.readableBytes <= Self.channelLogLimit {  // !-safe
                    var copy = self.allocator.buffer(capacity: frame.readableBytes)
                    copy.writeImmutableBuffer(frame)
                    self.ports[index].snapshot!.log.append(copy)  // !-safe, checked above
                    self.ports[index].recordedTotal &+= 1
                    self.ports[index].snapshot!.logBytes += frame.readableBytes  // !-safe
                } else {
                    self.ports[index].snapshot!.logOverflow += 1  // !-safe
                }
            }
        }
        self.sendToPort(port, frame: frame)
    }

    /// Notes a payload frame (data, not a bare ACK) from or to the port, for the stall measurement.
    func notePayload(_ port: PortID, length: Int) {
        guard length >= 128, self.ports[port.rawValue].snapshot?.measuring == true else { return }
        let now = Self.monotonicNanoseconds()
        if let last = self.ports[port.rawValue].snapshot!.lastPayload,  // !-safe, checked above
            now &- last > self.ports[port.rawValue].snapshot!.longestGap  // !-safe
        {
            self.ports[port.rawValue].snapshot!.longestGap = now &- last  // !-safe
            self.ports[port.rawValue].snapshot!.longestGapEnd = now  // !-safe
        }
        self.ports[port.rawValue].snapshot!.lastPayload = now  // !-safe
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Snapshot steps (called by the snapshot shell)

    /// Arms `vms` for a snapshot to `epoch`; `senders` are the other peers with VMs of the VIOLIN in the plan.
    /// Returns the VMs that could not be armed, with why.
    func arm(vms: [String], epoch: UInt32, policy: EpochGate.Policy, senders: Set<PeerID>) -> [String: String] {
        var refused: [String: String] = [:]
        let now = Self.monotonicNanoseconds()
        for vm in vms {
            guard let index = self.portIndex(vm) else {
                refused[vm] = "no switch port for VM \(vm) on this peer"
                continue
            }
            guard self.ports[index].gate.arm(to: epoch, policy: policy) else {
                refused[vm] =
                    "VM \(vm) is at epoch \(self.ports[index].gate.epoch)\(self.ports[index].gate.cutting ? " and being cut" : ""); the snapshot's epoch \(epoch) must be higher"
                continue
            }
            self.ports[index].snapshot = PortSnapshot(epoch: epoch, armedAt: now)
            let vni = self.ports[index].violin.vni
            if self.drains[vni]?.epoch != epoch {
                var received: [PeerID: UInt64] = [:]
                for sender in senders {
                    received[sender] =
                        self.tunnelIndex[sender].flatMap { self.tunnels[$0].received[vni]?.below(epoch) } ?? 0
                }
                self.drains[vni] = ViolinDrain(
                    epoch: epoch,
                    drain: ChannelDrain(senders: senders, received: received),
                    localPending: []
                )
            }
            self.drains[vni]!.localPending.insert(index)  // !-safe, set above
        }
        return refused
    }

    /// Measures `vms`' stall without arming their gates: for a snapshot of mode `loop` (the per-VM baseline),
    /// or, with `stallOnly`, for `vnsnap-peer stall` (which never takes a port from a snapshot).
    func measure(vms: [String], stallOnly: Bool = false) {
        let now = Self.monotonicNanoseconds()
        for vm in vms {
            guard let index = self.portIndex(vm) else { continue }
            if let current = self.ports[index].snapshot, !current.stallOnly || stallOnly { continue }
            self.ports[index].snapshot = PortSnapshot(epoch: self.ports[index].gate.epoch, armedAt: now)
            self.ports[index].snapshot!.stallOnly = stallOnly  // !-safe, set above
        }
    }

    /// Ends `vnsnap-peer stall`'s measurement of `vm` and returns its longest payload gap; `nil` when a snapshot
    /// took the port over meanwhile (its state is left alone) or nothing was measured.
    func finishMeasure(_ vm: String) -> UInt64? {
        guard let index = self.portIndex(vm), let snapshot = self.ports[index].snapshot, snapshot.stallOnly else {
            return nil
        }
        self.ports[index].snapshot = nil
        return snapshot.longestGap
    }

    /// The marker (or a trigger) begins `vm`'s cut: inbound frames are held from now on.
    func beginCut(_ vm: String) {
        guard let index = self.portIndex(vm), self.ports[index].gate.armed != nil else { return }
        if !self.ports[index].gate.cutting { self.ports[index].gate.beginCut() }
    }

    /// The VM is stopped: reads everything left in its port socket as frames of the old epoch.
    func drainOutbound(_ vm: String) -> Int {
        guard let index = self.portIndex(vm), let fd = self.ports[index].fd else { return 0 }
        var count = 0
        var buffer = self.allocator.buffer(capacity: 9216)
        while true {
            buffer.clear()
            let n = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 9216) { raw in
                max(0, recv(fd, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT)))
            }
            guard n > 0 else { break }
            self.frameFromPort(PortID(index), frame: buffer)
            count += 1
        }
        self.flushPending()
        return count
    }

    /// The cut is done: the VM is in the new epoch. Once every local VM of the VIOLIN is, end-of-epoch markers
    /// go out on every tunnel.
    func finishCut(_ vm: String) {
        guard let index = self.portIndex(vm), self.ports[index].gate.cutting else { return }
        let epoch = self.ports[index].gate.armed!  // !-safe, cutting requires an armed gate
        self.ports[index].gate.finishCut()
        self.ports[index].epoch = epoch
        self.ports[index].snapshot?.cutAt = Self.monotonicNanoseconds()
        let vni = self.ports[index].violin.vni
        guard self.drains[vni]?.epoch == epoch else { return }
        self.drains[vni]!.localPending.remove(index)  // !-safe, checked above
        if self.drains[vni]!.localPending.isEmpty {  // !-safe
            self.sendMarkers(vni: vni, epoch: epoch)
            self.checkDrained(vni)
        }
    }

    /// The cut failed: the VM stays in its epoch.
    func cancelCut(_ vm: String) {
        guard let index = self.portIndex(vm), self.ports[index].gate.cutting else { return }
        self.ports[index].gate.cancelCut()
    }

    /// Delivers the held frames in order, as the gate now decides.
    func releaseHeld(_ vm: String) {
        guard let index = self.portIndex(vm), !self.ports[index].gate.cutting else { return }
        while let held = self.ports[index].heldFrames.popFirst() {
            switch self.ports[index].gate.released(frameEpoch: held.epoch) {
            case .deliverAndRecord: self.deliverNow(held.frame, to: PortID(index), record: true)
            default: self.deliverNow(held.frame, to: PortID(index), record: false)
            }
        }
        // The channels drained while frames were held: recording ends now that they are out.
        if let drain = self.drains[self.ports[index].violin.vni], drain.drainedAt != nil,
            self.ports[index].gate.epoch >= drain.epoch
        {
            self.ports[index].gate.stopRecording()
        }
        self.flushPending()
    }

    /// The snapshot ended (committed, aborted, or its report taken): gates back to normal, logs forgotten.
    func endSnapshot(vms: [String]) {
        for vm in vms {
            guard let index = self.portIndex(vm) else { continue }
            if self.ports[index].gate.cutting { continue }  // its cut finishes or fails on its own
            self.ports[index].gate.disarm()
            self.ports[index].gate.stopRecording()
            self.ports[index].snapshot = nil
            let vni = self.ports[index].violin.vni
            if self.ports.allSatisfy({ $0.violin.vni != vni || $0.snapshot == nil }) { self.drains[vni] = nil }
        }
    }

    /// What the switch measured and recorded for `vm` so far; measuring stops.
    func snapshotReport(_ vm: String) -> PortSnapshotReport? {
        guard let index = self.portIndex(vm), var snapshot = self.ports[index].snapshot else { return nil }
        snapshot.measuring = false
        self.ports[index].snapshot = snapshot
        let drain = self.drains[self.ports[index].violin.vni]
        let drained = drain.map { $0.drainedAt != nil } ?? true
        return PortSnapshotReport(
            vm: vm,
            counters: self.ports[index].gate.counters,
            stall: snapshot.longestGap,
            stallStartAfterCut: snapshot.stallStartAfterCut,
            log: snapshot.log.map { Array($0.readableBytesView) },
            logOverflow: snapshot.logOverflow,
            drained: drained,
            missing: Dictionary(
                (drain?.drain.missing ?? [:]).map {
                    (self.tunnelIndex[$0.key].map { self.tunnels[$0].name } ?? "\($0.key)", $0.value)
                },
                uniquingKeysWith: +
            )
        )
    }

    /// Whether every channel into `vm`'s VIOLIN is drained (or nothing is armed).
    func isDrained(_ vm: String) -> Bool {
        guard let index = self.portIndex(vm), let drain = self.drains[self.ports[index].violin.vni] else { return true }
        return drain.drainedAt != nil
    }

    /// A restore: the VM starts in `epoch`, nothing armed, nothing held.
    func setEpoch(_ vm: String, epoch: UInt32) {
        guard let index = self.portIndex(vm) else { return }
        self.ports[index].gate = EpochGate(epoch: epoch)
        self.ports[index].epoch = epoch
        self.ports[index].heldFrames.removeAll()
        self.ports[index].snapshot = nil
    }

    /// A restore: re-injects the recorded channel state into `vm`, in order, ahead of anything else.
    func inject(_ vm: String, frames: [[UInt8]]) {
        guard let index = self.portIndex(vm) else { return }
        for bytes in frames {
            self.sendToPort(PortID(index), frame: ByteBuffer(bytes: bytes))
        }
        self.flushPending()
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Markers

    func sendMarkers(vni: VNI, epoch: UInt32) {
        for index in self.tunnels.indices where self.tunnels[index].up {
            let frames = self.tunnels[index].sent[vni]?.below(epoch) ?? 0
            let marker = EndOfEpochMarker(vni: vni, epoch: epoch, frames: frames)
            self.sendToTunnel(
                at: index,
                vni: vni,
                epoch: epoch,
                frame: ByteBuffer(bytes: marker.payload),
                kind: .endOfEpoch
            )
        }
        self.flushPending()
    }

    func endOfEpoch(_ marker: EndOfEpochMarker, from sender: PeerID) {
        guard self.drains[marker.vni]?.epoch == marker.epoch else { return }
        self.drains[marker.vni]!.drain.endOfEpoch(from: sender, sent: marker.frames)  // !-safe, checked above
        self.checkDrained(marker.vni)
    }

    /// Counts an old-epoch frame toward the drain and checks it (called for every admitted frame while armed).
    func countForDrain(vni: VNI, epoch: UInt32, from sender: PeerID) {
        guard let drain = self.drains[vni], epoch < drain.epoch, drain.drainedAt == nil else { return }
        self.drains[vni]!.drain.oldEpochFrame(from: sender)  // !-safe, checked above
        self.checkDrained(vni)
    }

    func senderRestarted(_ sender: PeerID) {
        if let index = self.tunnelIndex[sender] { self.tunnels[index].received = [:] }
        for vni in Array(self.drains.keys) { self.drains[vni]!.drain.senderRestarted(sender) }  // !-safe, its keys
    }

    private func checkDrained(_ vni: VNI) {
        guard let drain = self.drains[vni], drain.drainedAt == nil, drain.localPending.isEmpty, drain.drain.isDrained
        else { return }
        self.drains[vni]!.drainedAt = Self.monotonicNanoseconds()  // !-safe, checked above
        // Every channel is empty: frames of the old epoch can no longer arrive, recording ends — except on a
        // port still holding frames: old-epoch frames among them are in flight too, recorded when released.
        for index in self.ports.indices where self.ports[index].violin.vni == vni {
            if self.ports[index].gate.epoch >= drain.epoch, self.ports[index].heldFrames.isEmpty {
                self.ports[index].gate.stopRecording()
            }
        }
    }
}
