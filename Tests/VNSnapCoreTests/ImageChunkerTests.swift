import Testing
import VNSnapCore

/// Cutting a stream into chunks with bounded memory.
@Suite struct ImageChunkerTests {
    @Test func test_anySlicing_givesTheSameChunks_neverHoldingMoreThanOne() {
        var rng = SplitMix64(seed: 3)
        let stream = (0..<10_000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var chunker = ImageChunker(chunkSize: 1024)
        var chunks: [(index: Int, bytes: [UInt8])] = []
        var offset = 0
        while offset < stream.count {
            let length = min(Int.random(in: 0...3000, using: &rng), stream.count - offset)
            chunks += chunker.append(stream[offset..<offset + length])
            #expect(chunker.pending.count < 1024)
            offset += length
        }
        if let last = chunker.finish() { chunks.append(last) }
        #expect(chunks.map(\.index) == Array(0..<10))
        #expect(chunks.dropLast().allSatisfy { $0.bytes.count == 1024 })
        #expect(chunks.last?.bytes.count == 10_000 - 9 * 1024)
        #expect(chunks.flatMap(\.bytes) == stream)
        #expect(chunker.total == 10_000)
        #expect(chunker.finish() == nil)
    }
}
