/// A sliding anti-replay window over 64-bit sequence numbers (RFC 6479 style bitmap).
///
/// Accepts each sequence number at most once and rejects anything older than `size` behind the highest
/// seen, while tolerating the reordering UDP allows inside the window.
public struct ReplayWindow: Sendable, Hashable {
    /// How many sequence numbers behind the highest one are still accepted.
    public static let size = 1024
    private static let words = size / 64

    private var bitmap: [UInt64]
    /// Highest sequence number accepted so far, `nil` before the first.
    public private(set) var highest: UInt64?

    /// An empty window: the first sequence number of any value is accepted.
    public init() {
        self.bitmap = [UInt64](repeating: 0, count: Self.words)
        self.highest = nil
    }

    /// Whether `sequence` would be accepted, without recording it.
    public func wouldAccept(_ sequence: UInt64) -> Bool {
        guard let highest = self.highest else { return true }
        if sequence > highest { return true }
        let age = highest - sequence
        if age >= UInt64(Self.size) { return false }
        return !self.isSet(sequence)
    }

    /// Records `sequence` if acceptable; returns false for a replay or a too-old number.
    ///
    /// Call only after the datagram authenticated, so forged numbers cannot move the window.
    public mutating func accept(_ sequence: UInt64) -> Bool {
        guard let highest = self.highest else {
            self.highest = sequence
            self.set(sequence)
            return true
        }
        if sequence > highest {
            let advance = sequence - highest
            if advance >= UInt64(Self.size) {
                for i in 0..<Self.words { self.bitmap[i] = 0 }
            } else {
                // Clear the slots that the window slides over.
                // Counted by offset, so a sequence at UInt64.max cannot overflow the loop.
                for offset in 1...advance {
                    self.clear(highest &+ offset)
                }
            }
            self.highest = sequence
            self.set(sequence)
            return true
        }
        guard highest - sequence < UInt64(Self.size), !self.isSet(sequence) else { return false }
        self.set(sequence)
        return true
    }

    private func slot(_ sequence: UInt64) -> (word: Int, bit: UInt64) {
        let index = Int(sequence % UInt64(Self.size))
        return (index / 64, UInt64(1) << UInt64(index % 64))
    }

    private func isSet(_ sequence: UInt64) -> Bool {
        let (word, bit) = self.slot(sequence)
        return self.bitmap[word] & bit != 0
    }

    private mutating func set(_ sequence: UInt64) {
        let (word, bit) = self.slot(sequence)
        self.bitmap[word] |= bit
    }

    private mutating func clear(_ sequence: UInt64) {
        let (word, bit) = self.slot(sequence)
        self.bitmap[word] &= ~bit
    }
}
