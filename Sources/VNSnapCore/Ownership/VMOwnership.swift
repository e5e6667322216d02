/// Which peer runs a VM, as the cluster agreed (issue 14, DESIGN §11): written only by the elected initiator (a
/// majority, a fencing term) when a restore moves the VM, copied to every peer by catalog sync. A VM without a
/// record runs where it is configured.
public struct VMOwnership: Sendable, Hashable, Codable {
    /// The VM.
    public var vm: String
    /// Its VIOLIN.
    public var violin: String
    /// The peer that runs it, by name.
    public var owner: String
    /// Bumped at every move: a record of a higher generation supersedes a lower one.
    public var generation: UInt64
    /// The term of the initiator that wrote it (two initiators of different terms cannot write one generation
    /// twice without one being fenced, but the order must still be total).
    public var term: UInt64

    /// Creates a record.
    public init(vm: String, violin: String, owner: String, generation: UInt64, term: UInt64) {
        self.vm = vm
        self.violin = violin
        self.owner = owner
        self.generation = generation
        self.term = term
    }

    /// Whether this record replaces `other` (of the same VM): a higher generation, then a higher term, then (never
    /// reached by construction, but the order is total) the owner's name.
    public func supersedes(_ other: VMOwnership) -> Bool {
        (self.generation, self.term, self.owner) > (other.generation, other.term, other.owner)
    }

    /// Where it runs, for the operator: `moved to h4 (generation 3)`.
    public var summary: String {
        "moved to \(self.owner) (generation \(self.generation))"
    }

    /// The records that change `known` once `incoming` is merged into it (the ones that supersede what is known),
    /// in VM order.
    public static func merge(_ incoming: [VMOwnership], into known: [String: VMOwnership]) -> [VMOwnership] {
        var newest: [String: VMOwnership] = [:]
        for record in incoming {
            if let seen = newest[record.vm] ?? known[record.vm], !record.supersedes(seen) { continue }
            newest[record.vm] = record
        }
        return newest.values.sorted { $0.vm < $1.vm }
    }

    /// The records an initiator of `term` writes when VMs are placed on new peers (a restore): for each VM whose
    /// placement differs from where it runs now (its record, or else `configured`), the next generation.
    public static func moves(
        _ placement: [String: String],
        violin: String,
        known: [String: VMOwnership],
        configured: [String: String],
        term: UInt64
    ) -> [VMOwnership] {
        placement.keys.sorted().compactMap { vm in
            let target = placement[vm]!  // !-safe, its keys
            let current = known[vm]?.owner ?? configured[vm]
            guard current != target else { return nil }
            return VMOwnership(
                vm: vm,
                violin: violin,
                owner: target,
                generation: (known[vm]?.generation ?? 0) + 1,
                term: term
            )
        }
    }
}
