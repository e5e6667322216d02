/// What an `owners` message carries (issue 14): a restorer's ask that the initiator record where a restore places
/// VMs, or the initiator's records as written (its answer, and its news to every member).
public struct OwnershipChange: Sendable, Hashable, Codable {
    /// The VIOLIN of the VMs.
    public var violin: String
    /// Ask: where the restore places each VM, by peer name.
    public var placement: [String: String]
    /// Ask: where each VM runs when the cluster has no record of it (the snapshot's peers).
    public var configured: [String: String]
    /// Answer and news: the records written.
    public var records: [VMOwnership]
    /// Answer: why the initiator would not record them.
    public var refusal: String?

    /// Creates a change.
    public init(
        violin: String,
        placement: [String: String] = [:],
        configured: [String: String] = [:],
        records: [VMOwnership] = [],
        refusal: String? = nil
    ) {
        self.violin = violin
        self.placement = placement
        self.configured = configured
        self.records = records
        self.refusal = refusal
    }
}
