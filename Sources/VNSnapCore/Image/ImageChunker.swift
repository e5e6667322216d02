/// Cuts a byte stream (a hypervisor's save stream) into fixed-size chunks as it arrives, holding at most one
/// chunk's worth of bytes: memory stays bounded whatever the VM's size (DESIGN §7).
public struct ImageChunker: Sendable {
    /// Bytes per chunk (the last may be shorter).
    public let chunkSize: Int
    /// Bytes waiting for their chunk to fill (never more than `chunkSize`).
    public private(set) var pending: [UInt8] = []
    /// The next chunk's index.
    public private(set) var nextIndex = 0
    /// Bytes seen so far.
    public private(set) var total: UInt64 = 0

    /// A chunker of `chunkSize`-byte chunks.
    public init(chunkSize: Int = 4 << 20) {
        precondition(chunkSize > 0, "chunkSize must be positive")
        self.chunkSize = chunkSize
        self.pending.reserveCapacity(chunkSize)
    }

    /// Adds bytes; returns the chunks they completed, in order.
    public mutating func append(_ bytes: some Collection<UInt8>) -> [(index: Int, bytes: [UInt8])] {
        var done: [(index: Int, bytes: [UInt8])] = []
        var rest = bytes[...]
        self.total += UInt64(bytes.count)
        while !rest.isEmpty {
            let take = min(self.chunkSize - self.pending.count, rest.count)
            self.pending += rest.prefix(take)
            rest = rest.dropFirst(take)
            if self.pending.count == self.chunkSize {
                done.append((self.nextIndex, self.pending))
                self.nextIndex += 1
                self.pending.removeAll(keepingCapacity: true)
            }
        }
        return done
    }

    /// The end of the stream: the last, partial chunk, if any bytes are left.
    public mutating func finish() -> (index: Int, bytes: [UInt8])? {
        guard !self.pending.isEmpty else { return nil }
        defer {
            self.nextIndex += 1
            self.pending.removeAll()
        }
        return (self.nextIndex, self.pending)
    }
}
