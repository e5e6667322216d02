import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import VNSnapCore
import VNSnapCrypto
import VNSnapImage

/// The peer side of the image-store protocol: puts a replica into a store, fetches one, drops a snapshot's.
///
/// Each call is one encrypted connection. A put keeps at most `window` chunks unacknowledged, so a slow store
/// slows the sender instead of filling memory on either side.
public enum StoreClient {
    /// Chunks in flight before the sender waits for acknowledgements.
    public static let window = 4

    /// Puts a replica of `key` (`reserve` bytes at most) chunk by chunk from `chunks`, then seals it; returns
    /// when the store holds it all, sealed. Throws the store's refusal or failure.
    public static func put(
        _ key: ReplicaKey,
        reserve: UInt64,
        chunks: [(SnapshotManifest.ChunkDescriptor, [UInt8])],
        to route: StoreRoute,
        key secret: SecretKey,
        keys: @escaping @Sendable (UInt32) -> SecretKey?
    ) async throws {
        let (stream, continuation) = AsyncStream<(SnapshotManifest.ChunkDescriptor, [UInt8])>.makeStream()
        for chunk in chunks { continuation.yield(chunk) }
        continuation.finish()
        try await self.put(key, reserve: reserve, chunks: stream, to: route, key: secret, keys: keys)
    }

    /// Puts a replica from a stream of chunks as they are made; `acknowledged` hears each chunk the store holds
    /// (the sender's cue that it may make another).
    public static func put(
        _ key: ReplicaKey,
        reserve: UInt64,
        chunks: AsyncStream<(SnapshotManifest.ChunkDescriptor, [UInt8])>,
        to route: StoreRoute,
        key secret: SecretKey,
        keys: @escaping @Sendable (UInt32) -> SecretKey?,
        accepted: @escaping @Sendable () -> Void = {},
        acknowledged: @escaping @Sendable () -> Void = {}
    ) async throws {
        try await self.session(route, key: secret, keys: keys) { link in
            try await link.send(.put(key, bytes: reserve))
            try Self.expect(try await link.receive(), .accepted, key)
            accepted()
            var (sent, acked) = (0, 0)
            var list: [SnapshotManifest.ChunkDescriptor] = []
            for await (chunk, data) in chunks {
                try await link.send(.chunk(chunk, data: data))
                list.append(chunk)
                sent += 1
                while sent - acked > Self.window {
                    try Self.expect(try await link.receive(), .stored(index: UInt32(acked)), key)
                    acked += 1
                    acknowledged()
                }
            }
            while acked < sent {
                try Self.expect(try await link.receive(), .stored(index: UInt32(acked)), key)
                acked += 1
                acknowledged()
            }
            // An abandoned upload ends its stream too: it must not be sealed as if complete.
            try Task.checkCancellation()
            try await link.send(.seal(chunkCount: UInt32(list.count), digest: ImageStreamFeeder.digest(of: list)))
            try Self.expect(try await link.receive(), .sealed, key)
        }
    }

    /// Every chunk of the replica `key`, as the store holds it (the caller verifies them against the manifest).
    public static func get(
        _ key: ReplicaKey,
        from route: StoreRoute,
        key secret: SecretKey,
        keys: @escaping @Sendable (UInt32) -> SecretKey?
    ) async throws -> [(SnapshotManifest.ChunkDescriptor, [UInt8])] {
        let chunks = NIOLockedValueBox<[(SnapshotManifest.ChunkDescriptor, [UInt8])]>([])
        _ = try await self.get(key, from: route, key: secret, keys: keys) { chunk, data in
            chunks.withLockedValue { $0.append((chunk, data)) }
        }
        return chunks.withLockedValue { $0 }
    }

    /// Streams the replica `key` chunk by chunk into `each` (one chunk in memory at a time); returns its chunk
    /// list. `each` may throw to stop the fetch.
    public static func get(
        _ key: ReplicaKey,
        from route: StoreRoute,
        key secret: SecretKey,
        keys: @escaping @Sendable (UInt32) -> SecretKey?,
        each: @escaping @Sendable (SnapshotManifest.ChunkDescriptor, [UInt8]) async throws -> Void
    ) async throws -> [SnapshotManifest.ChunkDescriptor] {
        try await self.session(route, key: secret, keys: keys) { link in
            try await link.send(.get(key))
            var list: [SnapshotManifest.ChunkDescriptor] = []
            while true {
                switch try await link.receive() {
                case .data(let chunk, let data):
                    try await each(chunk, data)
                    list.append(chunk)
                case .end(let count) where Int(count) == list.count: return list
                case .failed(let reason): throw StoreError(.failed, "\(key): \(reason)")
                case let other:
                    throw StoreError(.unexpected, "\(key): unexpected answer \(other.map { "\($0)" } ?? "none")")
                }
            }
        }
    }

    /// The replicas of `snapshot` the store holds, and where (RAM, disk).
    public static func stat(
        snapshot: UInt64,
        at route: StoreRoute,
        key secret: SecretKey,
        keys: @escaping @Sendable (UInt32) -> SecretKey?
    ) async throws -> [HeldReplica] {
        try await self.session(route, key: secret, keys: keys) { link in
            try await link.send(.stat(snapshot: snapshot))
            guard case .held(let replicas) = try await link.receive() else {
                throw StoreError(.unexpected, "snapshot \(snapshot): the store did not say what it holds")
            }
            return replicas
        }
    }

    /// Asks the store to forget every replica of `snapshot`.
    public static func drop(
        snapshot: UInt64,
        at route: StoreRoute,
        key secret: SecretKey,
        keys: @escaping @Sendable (UInt32) -> SecretKey?
    ) async throws {
        try await self.session(route, key: secret, keys: keys) { link in
            try await link.send(.drop(snapshot: snapshot))
            guard case .accepted = try await link.receive() else {
                throw StoreError(.refused, "snapshot \(snapshot): drop refused")
            }
        }
    }

    private static func expect(_ answer: StoreMessage?, _ wanted: StoreMessage, _ key: ReplicaKey) throws {
        switch answer {
        case wanted?: return
        case .refused(let reason)?: throw StoreError(.refused, "\(key): refused: \(reason)")
        case .failed(let reason)?: throw StoreError(.failed, "\(key): \(reason)")
        case nil: throw StoreError(.closed, "\(key): the store closed the connection")
        case let other?: throw StoreError(.unexpected, "\(key): unexpected answer \(other) (wanted \(wanted))")
        }
    }

    private static func session<Result: Sendable>(
        _ route: StoreRoute,
        key: SecretKey,
        keys: @escaping @Sendable (UInt32) -> SecretKey?,
        _ body: (inout StoreConnection) async throws -> Result
    ) async throws -> Result {
        try await route.withConnection { inbound, outbound in
            var link = try await StoreConnection.handshake(
                .peer,
                inbound: inbound,
                outbound: outbound,
                key: key,
                keys: keys
            )
            return try await body(&link)
        }
    }
}
