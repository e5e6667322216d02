/// A peer's fence (issue 14, `fence_after_s`): a peer that has seen no majority for `after` pauses its VMs, so a
/// cut-off host's copies never run on beside copies a restore started on the majority side; it resumes them once
/// it sees a majority again and has heard the cluster's ownership records since (the shell then resumes the VMs
/// it still owns and stops the others).
///
/// Pure: the shell reports what it sees, with the time, and carries out the actions.
public struct FenceLease<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// What the shell must do.
    public enum Action: Sendable, Hashable {
        /// Pause every VM of this peer.
        case pause
        /// Resume the VMs this peer still owns (and stop the others).
        case resume
    }

    /// How long without a majority before the VMs are paused.
    public let after: Duration
    /// Whether the VMs are paused by the fence now.
    public private(set) var fenced = false
    var lastMajority: Instant
    /// While fenced: since when a majority is seen again.
    var majoritySince: Instant?

    /// A lease that counts from `now` (a peer starting up has not seen a majority yet either).
    public init(after: Duration, now: Instant) {
        self.after = after
        self.lastMajority = now
    }

    /// Whether it waits for the ownership records to resume (fenced, and a majority is seen again).
    public var awaitsOwnership: Bool { self.fenced && self.majoritySince != nil }

    /// What this peer sees now: whether it is part of a majority (there is an initiator).
    public mutating func observe(majority: Bool, now: Instant) -> Action? {
        if majority {
            self.lastMajority = now
            if self.fenced, self.majoritySince == nil { self.majoritySince = now }
            return nil
        }
        self.majoritySince = nil
        guard !self.fenced, self.lastMajority.duration(to: now) >= self.after else { return nil }
        self.fenced = true
        return .pause
    }

    /// The cluster's ownership records were heard at `now` (a catalog summary from another peer).
    public mutating func ownershipHeard(now: Instant) -> Action? {
        guard self.fenced, let since = self.majoritySince, since <= now else { return nil }
        self.fenced = false
        self.majoritySince = nil
        return .resume
    }
}
