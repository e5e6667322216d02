/// What a peer does with one of its VMs at start-up, or when it learns a newer ownership record (issue 14): a
/// pure function of the record and of whether the VM's QEMU still runs here.
public enum VMStartDecision: Sendable, Hashable {
    /// Nothing runs and this peer owns it (or the cluster has no record of it): start it.
    case start
    /// Its QEMU still runs from an earlier start and this peer owns it: take it back.
    case reattach
    /// Another peer owns it and nothing runs here: leave it stopped.
    case stayStopped(VMOwnership)
    /// Another peer owns it but a copy still runs here (the host was cut off, not dead): stop that copy.
    case stopStale(VMOwnership)

    /// The decision for a VM of peer `me` with `record` (if the cluster has one), `runningHere` or not.
    public static func decide(me: String, record: VMOwnership?, runningHere: Bool) -> VMStartDecision {
        if let record, record.owner != me {
            return runningHere ? .stopStale(record) : .stayStopped(record)
        }
        return runningHere ? .reattach : .start
    }

    /// Whether the VM runs here afterwards.
    public var runs: Bool {
        switch self {
        case .start, .reattach: true
        case .stayStopped, .stopStale: false
        }
    }
}
