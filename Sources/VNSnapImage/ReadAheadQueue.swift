import Foundation

/// Blocks read from QEMU's save stream ahead of the thread that compresses them, up to a bound (issue 16): while a
/// chunk is compressed, the socket is still drained, so QEMU's migration thread — which during a background
/// snapshot also copies the pages the vCPUs fault on — does not block on a full socket. Past the bound the reader
/// waits, and QEMU with it, so memory stays bounded whatever the VM's size.
final class ReadAheadQueue: @unchecked Sendable {
    // @unchecked: every field is guarded by `condition`.
    private let condition = NSCondition()
    private var blocks: [[UInt8]] = []
    private var head = 0
    private var spare: [[UInt8]] = []
    private var queued = 0
    private var ended: Int32?
    /// Bytes queued at most.
    let limit: Int
    /// Size of one block read from the socket.
    let blockSize: Int
    /// The most bytes queued at once (for the report).
    private(set) var peak = 0

    init(limit: Int, blockSize: Int = 256 << 10) {
        self.limit = max(limit, blockSize)
        self.blockSize = blockSize
    }

    /// A buffer to read the next block into: one the consumer gave back, or a new one.
    func buffer() -> [UInt8] {
        self.condition.lock()
        defer { self.condition.unlock() }
        return self.spare.popLast() ?? [UInt8](repeating: 0, count: self.blockSize)
    }

    /// Queues the first `count` bytes of `block`, waiting while the queue is full.
    func push(_ block: [UInt8], count: Int) {
        var block = block
        if count < block.count { block.removeSubrange(count...) }
        self.condition.lock()
        while self.queued >= self.limit { self.condition.wait() }
        self.blocks.append(block)
        self.queued += count
        self.peak = max(self.peak, self.queued)
        self.condition.broadcast()
        self.condition.unlock()
    }

    /// The reader is done: end of stream (`0`) or a read error (its errno).
    func finish(errno code: Int32) {
        self.condition.lock()
        self.ended = code
        self.condition.broadcast()
        self.condition.unlock()
    }

    /// The next block, waiting for one; `nil` with the reader's errno (0 at the end of the stream) once drained.
    func pop() -> (block: [UInt8]?, errno: Int32) {
        self.condition.lock()
        defer { self.condition.unlock() }
        while self.head == self.blocks.count, self.ended == nil { self.condition.wait() }
        guard self.head < self.blocks.count else { return (nil, self.ended ?? 0) }
        let block = self.blocks[self.head]
        self.head += 1
        if self.head > 64 {
            self.blocks.removeFirst(self.head)
            self.head = 0
        }
        self.queued -= block.count
        self.condition.broadcast()
        return (block, 0)
    }

    /// Gives a consumed block back for the reader to fill again.
    func recycle(_ block: [UInt8]) {
        guard block.count == self.blockSize else { return }
        self.condition.lock()
        if self.spare.count < 8 { self.spare.append(block) }
        self.condition.unlock()
    }
}
