import Testing
import VNSnapCore

/// The image-store protocol's binary form: every message round-trips; truncated, padded or unknown input is
/// refused with the reason, never a crash.
@Suite struct StoreCodecTests {
    static let key = ReplicaKey(snapshot: 7, vm: "sink", kind: .memory)
    static let chunk = SnapshotManifest.ChunkDescriptor(index: 3, rawBytes: 4 << 20, storedBytes: 1234, hash: "ab12")
    static let messages: [StoreMessage] = [
        .put(key, bytes: 128 << 20),
        .put(ReplicaKey(snapshot: 8, vm: "relay", kind: .channel), bytes: 0),
        .chunk(chunk, data: [1, 2, 3]),
        .seal(chunkCount: 24, digest: "ff00"),
        .get(key),
        .drop(snapshot: 7),
        .accepted,
        .refused("store s1 has 12.0 MiB of RAM free, the replica needs 128.0 MiB"),
        .stored(index: 3),
        .sealed,
        .data(chunk, data: Array(repeating: 9, count: 70_000)),
        .end(chunkCount: 24),
        .failed("chunk 3 does not match its hash"),
        .stat(snapshot: 7),
        .held([]),
        .held([
            HeldReplica(key: key, sealed: true, inRAM: true, onDisk: false),
            HeldReplica(
                key: ReplicaKey(snapshot: 7, vm: "sink", kind: .channel),
                sealed: false,
                inRAM: true,
                onDisk: true
            ),
        ]),
    ]

    @Test func test_everyMessage_roundTrips() throws {
        for message in Self.messages {
            #expect(try StoreCodec.decode(StoreCodec.encode(message)) == message)
        }
    }

    @Test func test_everyTruncation_andATrailingByte_isRefused() throws {
        for message in Self.messages {
            let bytes = try StoreCodec.encode(message)
            for length in 0..<bytes.count {
                #expect(throws: WireFailure.self) { try StoreCodec.decode(Array(bytes.prefix(length))) }
            }
            #expect(throws: WireFailure.trailingBytes) { try StoreCodec.decode(bytes + [0]) }
        }
    }

    @Test func test_unknownVersionTypeOrKind_isRefused_andAnOversizedChunkIsNotEncoded() throws {
        #expect(throws: WireFailure.badVersion) { try StoreCodec.decode([9, 6]) }
        #expect(throws: WireFailure.malformed) { try StoreCodec.decode([1, 99]) }
        var put = try StoreCodec.encode(.get(Self.key))
        put[put.count - 1] = 3
        #expect(throws: WireFailure.malformed) { try StoreCodec.decode(put) }
        let huge = [UInt8](repeating: 0, count: StoreCodec.maximumChunkBytes + 1)
        #expect(throws: WireFailure.oversized) { try StoreCodec.encode(.chunk(Self.chunk, data: huge)) }
    }
}
