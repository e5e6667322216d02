/// What the switch does with frames for one local VM as snapshots move it from epoch to epoch (DESIGN §6).
///
/// Every frame carries its sending VM's epoch. While a snapshot is armed here, the first frame of the new
/// epoch for a VM not cut yet triggers that VM's cut (Lai–Yang) and is held; frames arriving while the VM is
/// being cut are held too (bounded) and released after it; after the cut, frames still of the old epoch are
/// delivered *and* recorded as channel state. The `drop` policy reproduces VNsnap instead: new-epoch frames to
/// a VM not cut yet are dropped. Pure: the shell keeps the held frames and asks `released` for each in order.
public struct EpochGate: Sendable, Hashable {
    /// How frames of the new epoch are treated before the VM's cut.
    public enum Policy: Sendable, Hashable {
        /// Trigger the cut and hold the frame (modes `cow` and `precopy`).
        case trigger
        /// Drop the frame (mode `drop`, VNsnap's behaviour).
        case drop
    }

    /// The decision for one frame.
    public enum Decision: Sendable, Hashable {
        /// Deliver it to the VM.
        case deliver
        /// Deliver it and append it to the snapshot's channel log (an in-flight frame of the old epoch).
        case deliverAndRecord
        /// Keep it until the cut finishes (`released` says what to do then).
        case hold
        /// Cut this VM now, and keep the frame until the cut finishes.
        case holdAndTriggerCut
        /// Drop it: a new-epoch frame under the `drop` policy, or the hold queue is full.
        case drop(EpochGateDropReason)
    }

    /// The VM's current epoch.
    public private(set) var epoch: UInt32
    /// The epoch an armed snapshot will move the VM to.
    public private(set) var armed: UInt32?
    /// Whether the VM is being cut (its inbound frames are held).
    public private(set) var cutting = false
    /// Whether frames of older epochs are recorded (after a cut, until the channels are drained).
    public private(set) var recording = false
    /// The policy of the armed snapshot.
    public private(set) var policy: Policy = .trigger
    /// Frames held now.
    public private(set) var held = 0
    /// Most frames held at once.
    public let holdLimit: Int
    /// Counters for the snapshot's per-VM table.
    public private(set) var counters = Counters()

    /// Frames held, dropped and recorded during the current snapshot.
    public struct Counters: Sendable, Hashable, Codable {
        /// Frames held during the cut.
        public var held: UInt64 = 0
        /// Frames dropped (policy or hold bound).
        public var dropped: UInt64 = 0
        /// Frames recorded into the channel log.
        public var recorded: UInt64 = 0
        /// Whether the cut was triggered by a frame rather than the marker.
        public var triggered = false

        /// Creates counters.
        public init(held: UInt64 = 0, dropped: UInt64 = 0, recorded: UInt64 = 0, triggered: Bool = false) {
            self.held = held
            self.dropped = dropped
            self.recorded = recorded
            self.triggered = triggered
        }
    }

    /// A gate for a VM at `epoch`.
    public init(epoch: UInt32 = 0, holdLimit: Int = 4096) {
        precondition(holdLimit >= 0, "holdLimit must not be negative")
        self.epoch = epoch
        self.holdLimit = holdLimit
    }

    /// A snapshot moving this VM to `target` (the snapshot's epoch, the same for every VM of the VIOLIN) is
    /// prepared here. Refused (false) unless `target` is past the VM's epoch.
    public mutating func arm(to target: UInt32, policy: Policy) -> Bool {
        guard target > self.epoch, !self.cutting else { return false }
        self.armed = target
        self.policy = policy
        self.counters = Counters()
        return true
    }

    /// The snapshot was aborted before this VM's cut: back to normal.
    public mutating func disarm() {
        precondition(!self.cutting, "disarm while the VM is being cut")
        self.armed = nil
    }

    /// Decides about a frame of the sender's epoch `frameEpoch` arriving for this VM.
    public mutating func inbound(frameEpoch: UInt32) -> Decision {
        // While frames are held nothing may overtake them, also after the cut until they are released.
        if self.cutting || self.held > 0 { return self.holdOrDrop() }
        if let next = self.armed, frameEpoch >= next {
            switch self.policy {
            case .drop:
                self.counters.dropped += 1
                return .drop(.newEpochBeforeCut)
            case .trigger:
                guard self.held < self.holdLimit else {
                    self.counters.dropped += 1
                    return .drop(.holdFull)
                }
                self.cutting = true
                self.counters.triggered = true
                self.held += 1
                self.counters.held += 1
                return .holdAndTriggerCut
            }
        }
        return self.afterCut(frameEpoch)
    }

    /// The marker asks for the cut (or the trigger's cut begins): hold inbound frames from now on.
    public mutating func beginCut() {
        precondition(self.armed != nil, "beginCut without an armed snapshot")
        self.cutting = true
    }

    /// The VM is cut: it is in the new epoch; older frames are recorded until `stopRecording`.
    public mutating func finishCut() {
        precondition(self.cutting, "finishCut without beginCut")
        self.epoch = self.armed!  // !-safe, beginCut requires it
        self.armed = nil
        self.cutting = false
        self.recording = true
    }

    /// The cut failed: the VM stays in its epoch; held frames are released as they are (`released`).
    public mutating func cancelCut() {
        precondition(self.cutting, "cancelCut without a cut")
        self.cutting = false
    }

    /// What to do with a held frame, in arrival order, once the cut has finished (or was cancelled).
    public mutating func released(frameEpoch: UInt32) -> Decision {
        precondition(!self.cutting && self.held > 0, "released without held frames after a cut")
        self.held -= 1
        return self.afterCut(frameEpoch)
    }

    /// Every channel into this VM is drained: stop recording.
    public mutating func stopRecording() {
        self.recording = false
    }

    private mutating func holdOrDrop() -> Decision {
        guard self.held < self.holdLimit else {
            self.counters.dropped += 1
            return .drop(.holdFull)
        }
        self.held += 1
        self.counters.held += 1
        return .hold
    }

    private mutating func afterCut(_ frameEpoch: UInt32) -> Decision {
        guard self.recording, frameEpoch < self.epoch else { return .deliver }
        self.counters.recorded += 1
        return .deliverAndRecord
    }
}

/// Why the epoch gate dropped a frame.
public enum EpochGateDropReason: String, Sendable, Hashable, Codable {
    /// A new-epoch frame to a VM not cut yet, under the `drop` policy (VNsnap).
    case newEpochBeforeCut
    /// The hold queue was full during a cut.
    case holdFull
}

/// Counts, per sending peer, the frames of the old epoch received on its tunnel, against the count its
/// end-of-epoch marker announces: the channel from that peer is drained when they match (DESIGN §6).
///
/// Both counts are cumulative over the sender's session (frames of any epoch before the new one), so the
/// receiver starts from what it had already received when the snapshot was armed.
public struct ChannelDrain: Sendable, Hashable {
    /// Peers whose channels must drain.
    public let senders: Set<PeerID>
    /// Old-epoch frames received per sender (during the whole old epoch).
    public private(set) var received: [PeerID: UInt64] = [:]
    /// Old-epoch frames each sender says it sent (from its end-of-epoch marker).
    public private(set) var announced: [PeerID: UInt64] = [:]

    /// Waits for `senders`, having already received `received` old-epoch frames from them.
    public init(senders: Set<PeerID>, received: [PeerID: UInt64] = [:]) {
        self.senders = senders
        self.received = received.filter { senders.contains($0.key) }
    }

    /// A sender restarted (new session): its count starts over, as its marker's will.
    public mutating func senderRestarted(_ sender: PeerID) {
        self.received[sender] = 0
    }

    /// A frame of the old epoch arrived from `sender`.
    public mutating func oldEpochFrame(from sender: PeerID) {
        self.received[sender, default: 0] += 1
    }

    /// `sender`'s end-of-epoch marker: it sent `count` frames of the old epoch on this tunnel.
    public mutating func endOfEpoch(from sender: PeerID, sent count: UInt64) {
        self.announced[sender] = count
    }

    /// Whether every sender's channel is drained.
    public var isDrained: Bool {
        self.senders.allSatisfy { sender in
            guard let announced = self.announced[sender] else { return false }
            return (self.received[sender] ?? 0) >= announced
        }
    }

    /// Frames announced but not received, per sender (lost on the way, when giving up on a drain).
    public var missing: [PeerID: UInt64] {
        var missing: [PeerID: UInt64] = [:]
        for sender in self.senders {
            let announced = self.announced[sender] ?? 0
            let received = self.received[sender] ?? 0
            if announced > received { missing[sender] = announced - received }
        }
        return missing
    }
}
