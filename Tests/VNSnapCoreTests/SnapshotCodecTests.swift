import Testing
import VNSnapCore

/// The snapshot protocol's wire format: every message round-trips; every damaged input is refused.
@Suite struct SnapshotCodecTests {
    typealias F = SnapshotFixtures

    static let messages: [SnapshotMessage] = [
        F.message(.prepare(F.plan), from: F.initiator),
        F.message(.prepared(ok: true, reason: nil), from: F.peers[0]),
        F.message(.prepared(ok: false, reason: "disk full on /var/lib/vnsnap-peer"), from: F.peers[1]),
        F.message(.cut(holders: Set(F.peers)), from: F.initiator),
        F.message(
            .cutDone([
                F.report("sink", at: 42),
                VMCutReport(vm: "source", cutAtNanoseconds: 7, downtimeNanoseconds: 9, triggered: true),
            ]),
            from: F.peers[0]
        ),
        F.message(.durable([]), from: F.peers[0]),
        F.message(.durable(Array("{\"vms\":[]}".utf8)), from: F.peers[1]),
        F.message(.commit(Array(repeating: 7, count: 20_000)), from: F.initiator),
        F.message(.committed, from: F.peers[1]),
        F.message(.abort(SnapshotAbortReason("no answer in phase cutting from h2")), from: F.initiator),
        F.message(.aborted, from: F.peers[1]),
        F.message(.failed("QMP stop failed"), from: F.peers[1]),
        F.message(.request(mode: .precopy, name: "before-upgrade", target: .disk), from: F.peers[1]),
        F.message(.request(mode: .cow, name: "at-once", target: .disk, wait: false), from: F.peers[0]),
        F.message(.operation(kind: .restore, snapshot: 12, wait: true, held: false), from: F.peers[1]),
        F.message(.operation(kind: .delete, snapshot: 13, wait: false, held: true), from: F.peers[0]),
        F.message(.operationAnswer(.granted), from: F.initiator),
        F.message(
            .operationAnswer(.queued(position: 2, behind: "a snapshot of pipeline, asked on h1")),
            from: F.initiator
        ),
        F.message(.operationAnswer(.refused("snapshot 12 is in use by a restore")), from: F.initiator),
        F.message(.operationDone, from: F.peers[1]),
        F.message(.owners(Array("[{\"vm\":\"relay\"}]".utf8)), from: F.peers[0]),
        F.message(.restore(run: 9, step: .pause, replay: true, moved: [:]), from: F.initiator),
        F.message(.restoreAnswer(run: 9, step: .rollback, ok: false, reason: "h2: relay", blob: []), from: F.peers[1]),
        F.message(
            .request(mode: .cow, name: "to-ram", target: SnapshotTarget(kind: .memory, replicas: 2)),
            from: F.peers[0]
        ),
        F.message(
            .prepare(
                SnapshotPlan(
                    vms: [F.peers[0]: ["db"]],
                    mode: .cow,
                    vni: 7,
                    target: SnapshotTarget(kind: .memory, replicas: 3)
                )
            ),
            from: F.initiator
        ),
        F.message(
            .progress(
                SnapshotProgress(snapshotID: 9, phase: "committed", finished: true, message: "", blob: [1, 2, 3])
            ),
            from: F.initiator
        ),
        F.message(
            .progress(SnapshotProgress(snapshotID: 0, phase: "refused", finished: true, message: "no VMs")),
            from: F.initiator
        ),
        F.message(
            .streamed([
                VMStreamedBytes(vm: "sink", rawBytes: 40 << 20, storedBytes: 12 << 20),
                VMStreamedBytes(vm: "source", rawBytes: 0, storedBytes: 0),
            ]),
            from: F.peers[0]
        ),
        F.message(.streamed([]), from: F.peers[1]),
        F.message(.restore(run: 5, step: .load, replay: true, moved: [:]), from: F.initiator),
        F.message(.prepared(ok: true, reason: nil, holds: true), from: F.peers[0]),
        F.message(.cut(holders: []), from: F.initiator),
        F.message(.inquire(term: 9), from: F.peers[0]),
        F.message(.holding(.nothing), from: F.peers[1]),
        F.message(.holding(.unfinished), from: F.peers[1]),
        F.message(.holding(.durable(cuts: [F.report("sink", at: 3)], report: [1, 2, 3])), from: F.peers[0]),
        F.message(.holding(.committed(manifest: Array(repeating: 4, count: 30_000))), from: F.peers[0]),
        F.message(.holding(.aborted), from: F.peers[1]),
        F.message(.holding(.streaming), from: F.peers[1]),
        F.message(.catalog(reply: true, blob: Array("{\"committed\":[7]}".utf8)), from: F.peers[0]),
        F.message(.catalog(reply: false, blob: []), from: F.peers[1]),
        F.message(.manifestWanted, from: F.peers[0]),
        F.message(.manifest([1, 2, 3]), from: F.peers[1]),
        F.message(
            .restore(run: 6, step: .verify, replay: false, moved: ["relay": F.peers[1], "sink": F.peers[0]]),
            from: F.initiator
        ),
    ]

    @Test func test_everyMessage_roundTrips() throws {
        for message in Self.messages {
            #expect(try SnapshotCodec.decode(SnapshotCodec.encode(message)) == message)
        }
    }

    @Test func test_everyTruncation_andTrailingByte_isRefused() throws {
        for message in Self.messages {
            let bytes = try SnapshotCodec.encode(message)
            for length in 0..<bytes.count {
                #expect(throws: WireFailure.self) { try SnapshotCodec.decode(Array(bytes.prefix(length))) }
            }
            #expect(throws: WireFailure.trailingBytes) { try SnapshotCodec.decode(bytes + [0]) }
        }
    }

    @Test func test_randomBytes_neverCrash_andBadVersionOrTypeIsNamed() {
        var rng = SplitMix64(seed: 5)
        for _ in 0..<20_000 {
            let bytes = (0..<Int.random(in: 0...200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = try? SnapshotCodec.decode(bytes)
        }
        var bytes = (try? SnapshotCodec.encode(Self.messages[3])) ?? []
        bytes[0] = 2  // the version before the restore transaction's steps: refused, not misread
        #expect(throws: WireFailure.badVersion) { try SnapshotCodec.decode(bytes) }
        bytes[0] = 3
        bytes[1] = 99
        #expect(throws: WireFailure.malformed) { try SnapshotCodec.decode(bytes) }
    }

    @Test func test_longReasonIsShortened_butTooManyVMsAreRefused() throws {
        let long = String(repeating: "é", count: 400)
        let decoded = try SnapshotCodec.decode(SnapshotCodec.encode(F.message(.failed(long), from: F.peers[0])))
        guard case .failed(let reason) = decoded.body else {
            Issue.record("\(decoded)")
            return
        }
        #expect(reason.utf8.count <= 255)
        #expect(reason.hasSuffix("…"))
        let huge = SnapshotPlan(vms: [F.peers[0]: (0..<300).map { "vm\($0)" }], mode: .cow)
        #expect(throws: WireFailure.self) { try SnapshotCodec.encode(F.message(.prepare(huge), from: F.initiator)) }
    }
}
