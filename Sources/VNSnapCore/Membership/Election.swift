/// Initiator election (DESIGN §5): the initiator is the lowest-ordered alive member, provided this peer sees a
/// majority of the known member set alive; every change of initiator raises the term, which never goes down.
///
/// Pure: the shell feeds it the membership view and terms heard from others, and MUST persist `term` durably
/// before acting on a `.changed` outcome, so a restarted peer never accepts a lower term (fencing).
public struct Election: Sendable, Hashable {
    /// What an evaluation decided.
    public enum Outcome: Sendable, Hashable {
        /// Same initiator, same term.
        case unchanged
        /// A new initiator (or none, in a minority), under a higher term: persist, then announce.
        case changed(initiator: PeerID?, term: UInt64)
    }

    /// The current term.
    public private(set) var term: UInt64
    /// The current initiator; `nil` when this peer does not see a majority.
    public private(set) var initiator: PeerID?

    /// Starts from the durably stored term (0 on first start), with no initiator until the first evaluation.
    public init(storedTerm: UInt64) {
        self.term = storedTerm
        self.initiator = nil
    }

    /// Whether `alive` is a strict majority of `known`.
    public static func hasQuorum(alive: Int, known: Int) -> Bool {
        known > 0 && alive * 2 > known
    }

    /// Re-evaluates from the membership view.
    ///
    /// - Parameters:
    ///   - known: every member this peer knows, alive or not (this peer included); departed members (`left`)
    ///     should be excluded by the caller, dead ones kept: the majority is of the known set.
    ///   - alive: the members this peer sees alive (this peer included).
    public mutating func evaluate(known: Set<PeerID>, alive: Set<PeerID>) -> Outcome {
        let visible = alive.intersection(known)
        let winner = Self.hasQuorum(alive: visible.count, known: known.count) ? visible.min() : nil
        guard winner != self.initiator else { return .unchanged }
        self.initiator = winner
        self.term += 1
        return .changed(initiator: winner, term: self.term)
    }

    /// Adopts a higher term heard from another peer (gossiped metadata, protocol messages); lower ones are
    /// stale and ignored.
    ///
    /// - Returns: whether the term rose (persist it).
    public mutating func observe(term: UInt64) -> Bool {
        guard term > self.term else { return false }
        self.term = term
        return true
    }

    /// Whether a message under `term` must be refused (fencing: it comes from a superseded initiator).
    public func isStale(_ term: UInt64) -> Bool { term < self.term }
}
