import VNSnapCore
import VNSnapCrypto
import VNSnapImage

/// Well-formed inputs to start each binary target's corpus from (`vnsnap-fuzz seeds`; the text targets start
/// from real files instead: a manifest, configs, QMP lines as QEMU writes them).
extension FuzzTarget {
    /// Generated seeds; empty for the text targets.
    public var generatedSeeds: [[UInt8]] {
        switch self {
        case .tunnel: Self.tunnelSeeds
        case .swim: Self.swimMessages.compactMap { try? SWIMCodec.encode($0) }
        case .snapshot: Self.snapshotMessages.compactMap { try? SnapshotCodec.encode($0) }
        case .store: Self.storeMessages.compactMap { try? StoreCodec.encode($0) }
        case .stream: [Self.streamSeed(final: true), Self.streamSeed(final: false)]
        case .keyring: [Array(Self.ring.fileText.utf8)]
        case .channel: [ChannelLogFormat.encode([[], Array(repeating: 0xab, count: 60), Array(0..<255)])]
        case .manifest, .config, .qmp: []
        }
    }

    private static let a = PeerID(name: "h1")
    private static let b = PeerID(name: "h2")

    private static var tunnelSeeds: [[UInt8]] {
        var crypto = TunnelCrypto(keyring: Self.ring, clusterName: Self.clusterName)
        let kinds: [TunnelHeader.Kind] = [.frame, .membership, .snapshot, .endOfEpoch, .relay]
        return kinds.enumerated().map { index, kind in
            let header = TunnelHeader(
                kind: kind,
                vni: VNI(42)!,  // !-safe, in range
                source: Self.a,
                destination: Self.b,
                session: 99,
                epoch: UInt32(index),
                keyID: 0,
                sequence: UInt64(index + 1)
            )
            let keyID = Self.ring.keys[index % 2].keyID
            return crypto.sealed(
                header: header,
                payload: Array(repeating: UInt8(index), count: 14 + index),
                keyID: keyID
            )
        }
    }

    private static var swimMessages: [SWIMMessage] {
        let metadata = MemberMetadata(
            roles: [.vm, .store],
            tunnelAddress: "10.0.0.1:7946",
            storeCapacity: 1 << 30,
            version: "0.1.0",
            keyringGeneration: 3,
            nat: .public,
            publicAddress: "203.0.113.7:7947",
            relays: [Self.b],
            exchangeKey: Array(repeating: 5, count: 32)
        )
        let state = MemberState(
            id: Self.b,
            name: "h2",
            address: "10.0.0.2:7947",
            incarnation: 4,
            status: .suspect,
            metadata: metadata
        )
        return [
            SWIMMessage(from: Self.a, body: .ping(sequence: 1, target: Self.b)),
            SWIMMessage(from: Self.a, body: .pingRequest(sequence: 2, target: Self.b, address: "10.0.0.2:7947")),
            SWIMMessage(
                from: Self.a,
                body: .ack(sequence: 3, observed: "203.0.113.7:1"),
                gossip: [
                    SWIMUpdate(state: state, origin: Self.a)
                ]
            ),
            SWIMMessage(from: Self.a, body: .nack(sequence: 4)),
            SWIMMessage(from: Self.a, body: .gossip, gossip: [SWIMUpdate(state: state, origin: Self.b)]),
            SWIMMessage(from: Self.a, body: .pushPull(isResponse: true, members: [state])),
        ]
    }

    private static var snapshotMessages: [SnapshotMessage] {
        let key = SnapshotKey(id: 7, violin: "pipeline", epoch: 2, term: 3)
        let plan = SnapshotPlan(vms: [Self.a: ["source"], Self.b: ["sink"]], mode: .cow, vni: 42, name: "nightly")
        let bodies: [SnapshotMessage.Body] = [
            .prepare(plan),
            .prepared(ok: false, reason: "disk full", holds: true),
            .cut(holders: [Self.a, Self.b]),
            .cutDone([VMCutReport(vm: "sink", cutAtNanoseconds: 5, downtimeNanoseconds: 9, triggered: true)]),
            .durable(Array("{}".utf8)),
            .commit(Array("{\"format\":1}".utf8)),
            .abort(SnapshotAbortReason("no answer")),
            .request(mode: .drop, name: "n", target: .disk, wait: false),
            .restore(run: 9, step: .switchOver, replay: true, moved: ["sink": Self.a]),
            .restoreAnswer(run: 9, step: .resume, ok: true, reason: "", blob: [1, 2]),
            .inquire(term: 4),
            .operation(kind: .restore, snapshot: 7, wait: true, held: false),
            .operationAnswer(.queued(position: 1, behind: "a snapshot")),
            .streamed([]),
            .deleteSnapshot,
        ]
        return bodies.map { SnapshotMessage(key: key, from: Self.a, body: $0) }
    }

    private static var storeMessages: [StoreMessage] {
        let key = ReplicaKey(snapshot: 7, vm: "sink", kind: .memory)
        let chunk = SnapshotManifest.ChunkDescriptor(index: 0, rawBytes: 8, storedBytes: 4, hash: "ab")
        return [
            .put(key, bytes: 1 << 20),
            .chunk(chunk, data: [1, 2, 3, 4]),
            .seal(chunkCount: 1, digest: "cd"),
            .get(key),
            .refused("full"),
            .data(chunk, data: [9]),
            .end(chunkCount: 1),
            .stat(snapshot: 7),
            .held([HeldReplica(key: key, sealed: true, inRAM: true, onDisk: false)]),
        ]
    }

    private static func streamSeed(final: Bool) -> [UInt8] {
        var sealer = StreamSealer(key: Self.ring.keys[1], context: Self.streamContext)
        var bytes = sealer.header
        let messages = Self.storeMessages.prefix(3)
        for (index, message) in messages.enumerated() {
            let sealed = sealer.seal(
                (try? StoreCodec.encode(message)) ?? [],
                final: final && index == messages.count - 1
            )
            bytes += [UInt8(sealed.count >> 8), UInt8(sealed.count & 0xff)] + sealed
        }
        return bytes
    }
}
