/// The binary wire format of snapshot protocol messages (sent sealed, like membership messages), big-endian.
///
/// ```
/// message = version:u8(3) type:u8 id:u64 violin:str epoch:u32 term:u64 from:u64 body
/// type    = 1 prepare, 2 prepared, 3 cut, 4 cutDone, 5 durable, 6 commit, 7 committed, 8 abort, 9 aborted,
///           10 failed, 11 request, 12 progress, 13 restore, 14 restoreAnswer, 15 deleteSnapshot, 16 deleted,
///           17 streamed, 18 inquire, 19 holding, 20 catalog, 21 manifestWanted, 22 manifest,
///           23 operation, 24 operationAnswer, 25 operationDone, 26 owners
/// body    = prepare: mode:u8 vni:u32 peers:u8 (peer:u64 vms:u8 vm:str*)* target name:str
///         | prepared: ok:u8 reason:str holds:u8 | cut: holders:u8 (peer:u64)* (at most 150)
///         | cutDone: count:u8 (vm:str cutAt:u64 downtime:u64 triggered:u8)* | abort, failed: reason:str
///         | durable, commit, manifest, owners: blob | catalog: reply:u8 blob | request: mode:u8 name:str target wait:u8
///         | progress: snapshot:u64 phase:str finished:u8 message:str blob
///         | restore: run:u64 step:u8 replay:u8 moves:u8 (vm:str peer:u64)* | restoreAnswer: run:u64 step:u8 ok:u8 reason:str blob
///         | inquire: term:u64 | holding: kind:u8 (0 nothing, 1 unfinished, 2 durable: reports blob,
///           3 committed: blob, 4 aborted, 5 streaming) | operation: kind:u8 snapshot:u64 wait:u8 held:u8
///         | operationAnswer: state:u8 (0 granted, 1 queued, 2 refused) position:u32 text:str
///         | (nothing for the others)
/// str     = length:u8 utf8
/// blob    = length:u32 bytes
/// ```
/// Human-readable reasons longer than 255 bytes are shortened at a character boundary; everything else that
/// does not fit (names over 255 bytes, more than 255 peers or VMs, a message over its limit) is refused.
/// Messages without a blob fit one 1500-byte datagram; those with one (reports, manifests) may be larger and
/// travel as one fragmented UDP datagram, resent whole like every other message.
public enum SnapshotCodec {
    /// Largest encoded message without a blob (a sealed one stays within one 1500-byte datagram).
    public static let maximumSize = 1360
    /// Largest encoded message with a blob (durable reports, manifests, progress).
    public static let maximumBlobMessageSize = 60_000
    static let version: UInt8 = 3
    static let modes: [SnapshotMode] = [.cow, .precopy, .drop, .loop]

    /// Encodes a message.
    public static func encode(_ message: SnapshotMessage) throws(WireFailure) -> [UInt8] {
        var writer = WireWriter()
        writer.u8(Self.version)
        writer.u8(Self.type(of: message.body))
        writer.u64(message.key.id)
        try writer.string(message.key.violin)
        writer.u32(message.key.epoch)
        writer.u64(message.key.term)
        writer.u64(message.from.rawValue)
        switch message.body {
        case .prepare(let plan):
            writer.u8(UInt8(Self.modes.firstIndex(of: plan.mode)!))  // !-safe, every mode is listed
            writer.u32(plan.vni)
            guard plan.vms.count <= 255 else { throw .oversized }
            writer.u8(UInt8(plan.vms.count))
            for (peer, vms) in plan.vms.sorted(by: { $0.key < $1.key }) {
                writer.u64(peer.rawValue)
                guard vms.count <= 255 else { throw .oversized }
                writer.u8(UInt8(vms.count))
                for vm in vms { try writer.string(vm) }
            }
            try Self.write(plan.target, &writer)
            try writer.string(plan.name)
        case .prepared(let ok, let reason, let holds):
            writer.u8(ok ? 1 : 0)
            try writer.string(Self.shortened(reason ?? ""))
            writer.u8(holds ? 1 : 0)
        case .cut(let holders):
            guard holders.count <= 150 else { throw .oversized }
            writer.u8(UInt8(holders.count))
            for peer in holders.sorted() { writer.u64(peer.rawValue) }
        case .cutDone(let reports):
            try Self.write(reports, &writer)
        case .abort(let reason):
            try writer.string(Self.shortened(reason.message))
        case .failed(let reason):
            try writer.string(Self.shortened(reason))
        case .durable(let blob), .commit(let blob), .manifest(let blob), .owners(let blob):
            writer.blob(blob)
        case .catalog(let reply, let blob):
            writer.u8(reply ? 1 : 0)
            writer.blob(blob)
        case .request(let mode, let name, let target, let wait):
            writer.u8(UInt8(Self.modes.firstIndex(of: mode)!))  // !-safe, every mode is listed
            try writer.string(name)
            try Self.write(target, &writer)
            writer.u8(wait ? 1 : 0)
        case .progress(let progress):
            writer.u64(progress.snapshotID)
            try writer.string(progress.phase)
            writer.u8(progress.finished ? 1 : 0)
            try writer.string(Self.shortened(progress.message))
            writer.blob(progress.blob)
        case .restore(let run, let step, let replay, let moved):
            writer.u64(run)
            writer.u8(step.rawValue)
            writer.u8(replay ? 1 : 0)
            guard moved.count <= 255 else { throw .oversized }
            writer.u8(UInt8(moved.count))
            for (vm, peer) in moved.sorted(by: { $0.key < $1.key }) {
                try writer.string(vm)
                writer.u64(peer.rawValue)
            }
        case .restoreAnswer(let run, let step, let ok, let reason, let blob):
            writer.u64(run)
            writer.u8(step.rawValue)
            writer.u8(ok ? 1 : 0)
            try writer.string(Self.shortened(reason))
            writer.blob(blob)
        case .streamed(let counts):
            guard counts.count <= 255 else { throw .oversized }
            writer.u8(UInt8(counts.count))
            for count in counts {
                try writer.string(count.vm)
                writer.u64(count.rawBytes)
                writer.u64(count.storedBytes)
            }
        case .inquire(let term):
            writer.u64(term)
        case .holding(let holding):
            switch holding {
            case .nothing: writer.u8(0)
            case .unfinished: writer.u8(1)
            case .durable(let cuts, let report):
                writer.u8(2)
                try Self.write(cuts, &writer)
                writer.blob(report)
            case .committed(let manifest):
                writer.u8(3)
                writer.blob(manifest)
            case .aborted: writer.u8(4)
            case .streaming: writer.u8(5)
            }
        case .operation(let kind, let snapshot, let wait, let held):
            writer.u8(kind.rawValue)
            writer.u64(snapshot)
            writer.u8(wait ? 1 : 0)
            writer.u8(held ? 1 : 0)
        case .operationAnswer(let answer):
            switch answer {
            case .granted:
                writer.u8(0)
                writer.u32(0)
                try writer.string("")
            case .queued(let position, let behind):
                writer.u8(1)
                writer.u32(UInt32(clamping: position))
                try writer.string(Self.shortened(behind))
            case .refused(let reason):
                writer.u8(2)
                writer.u32(0)
                try writer.string(Self.shortened(reason))
            }
        case .committed, .aborted, .deleteSnapshot, .deleted, .manifestWanted, .operationDone:
            break
        }
        guard writer.bytes.count <= Self.limit(of: message.body) else { throw .oversized }
        return writer.bytes
    }

    /// Decodes a message; malformed input throws, never crashes.
    public static func decode(_ bytes: [UInt8]) throws(WireFailure) -> SnapshotMessage {
        guard bytes.count <= Self.maximumBlobMessageSize else { throw .oversized }
        var reader = WireReader(bytes: bytes)
        guard try reader.u8() == Self.version else { throw .badVersion }
        let type = try reader.u8()
        let key = SnapshotKey(
            id: try reader.u64(),
            violin: try reader.string(),
            epoch: try reader.u32(),
            term: try reader.u64()
        )
        let from = PeerID(rawValue: try reader.u64())
        let body: SnapshotMessage.Body
        switch type {
        case 1:
            let modeIndex = Int(try reader.u8())
            guard modeIndex < Self.modes.count else { throw .malformed }
            let vni = try reader.u32()
            var vms: [PeerID: [String]] = [:]
            for _ in 0..<Int(try reader.u8()) {
                let peer = PeerID(rawValue: try reader.u64())
                var names: [String] = []
                for _ in 0..<Int(try reader.u8()) { names.append(try reader.string()) }
                guard vms[peer] == nil else { throw .malformed }
                vms[peer] = names
            }
            body = .prepare(
                SnapshotPlan(
                    vms: vms,
                    mode: Self.modes[modeIndex],
                    vni: vni,
                    target: try Self.readTarget(&reader),
                    name: try reader.string()
                )
            )
        case 2:
            let ok = try reader.u8()
            guard ok <= 1 else { throw .malformed }
            let reason = try reader.string()
            let holds = try reader.u8()
            guard holds <= 1 else { throw .malformed }
            body = .prepared(ok: ok == 1, reason: reason.isEmpty ? nil : reason, holds: holds == 1)
        case 3:
            var holders: Set<PeerID> = []
            for _ in 0..<Int(try reader.u8()) {
                guard holders.insert(PeerID(rawValue: try reader.u64())).inserted else { throw .malformed }
            }
            body = .cut(holders: holders)
        case 4: body = .cutDone(try Self.readReports(&reader))
        case 5: body = .durable(try reader.blob())
        case 6: body = .commit(try reader.blob())
        case 7: body = .committed
        case 8: body = .abort(SnapshotAbortReason(try reader.string()))
        case 9: body = .aborted
        case 10: body = .failed(try reader.string())
        case 11:
            let modeIndex = Int(try reader.u8())
            guard modeIndex < Self.modes.count else { throw .malformed }
            let name = try reader.string()
            let target = try Self.readTarget(&reader)
            let wait = try reader.u8()
            guard wait <= 1 else { throw .malformed }
            body = .request(mode: Self.modes[modeIndex], name: name, target: target, wait: wait == 1)
        case 12:
            let id = try reader.u64()
            let phase = try reader.string()
            let finished = try reader.u8()
            guard finished <= 1 else { throw .malformed }
            let text = try reader.string()
            body = .progress(
                SnapshotProgress(
                    snapshotID: id,
                    phase: phase,
                    finished: finished == 1,
                    message: text,
                    blob: try reader.blob()
                )
            )
        case 13:
            let run = try reader.u64()
            guard let step = RestoreStep(rawValue: try reader.u8()) else { throw .malformed }
            let replay = try reader.u8()
            guard replay <= 1 else { throw .malformed }
            var moved: [String: PeerID] = [:]
            for _ in 0..<(try reader.u8()) {
                let vm = try reader.string()
                guard moved.updateValue(PeerID(rawValue: try reader.u64()), forKey: vm) == nil else { throw .malformed }
            }
            body = .restore(run: run, step: step, replay: replay == 1, moved: moved)
        case 14:
            let run = try reader.u64()
            guard let step = RestoreStep(rawValue: try reader.u8()) else { throw .malformed }
            let ok = try reader.u8()
            guard ok <= 1 else { throw .malformed }
            let reason = try reader.string()
            body = .restoreAnswer(run: run, step: step, ok: ok == 1, reason: reason, blob: try reader.blob())
        case 15: body = .deleteSnapshot
        case 16: body = .deleted
        case 17:
            var counts: [VMStreamedBytes] = []
            for _ in 0..<Int(try reader.u8()) {
                counts.append(
                    VMStreamedBytes(vm: try reader.string(), rawBytes: try reader.u64(), storedBytes: try reader.u64())
                )
            }
            body = .streamed(counts)
        case 18: body = .inquire(term: try reader.u64())
        case 20:
            let reply = try reader.u8()
            guard reply <= 1 else { throw .malformed }
            body = .catalog(reply: reply == 1, blob: try reader.blob())
        case 21: body = .manifestWanted
        case 22: body = .manifest(try reader.blob())
        case 23:
            guard let kind = ViolinOperationKind(rawValue: try reader.u8()) else { throw .malformed }
            let snapshot = try reader.u64()
            let wait = try reader.u8()
            let held = try reader.u8()
            guard wait <= 1, held <= 1 else { throw .malformed }
            body = .operation(kind: kind, snapshot: snapshot, wait: wait == 1, held: held == 1)
        case 24:
            let state = try reader.u8()
            let position = Int(try reader.u32())
            let text = try reader.string()
            switch state {
            case 0: body = .operationAnswer(.granted)
            case 1: body = .operationAnswer(.queued(position: position, behind: text))
            case 2: body = .operationAnswer(.refused(text))
            default: throw .malformed
            }
        case 25: body = .operationDone
        case 26: body = .owners(try reader.blob())
        case 19:
            switch try reader.u8() {
            case 0: body = .holding(.nothing)
            case 1: body = .holding(.unfinished)
            case 2: body = .holding(.durable(cuts: try Self.readReports(&reader), report: try reader.blob()))
            case 3: body = .holding(.committed(manifest: try reader.blob()))
            case 4: body = .holding(.aborted)
            case 5: body = .holding(.streaming)
            default: throw .malformed
            }
        default: throw .malformed
        }
        guard bytes.count <= Self.limit(of: body) else { throw .oversized }
        guard reader.offset == bytes.count else { throw .trailingBytes }
        return SnapshotMessage(key: key, from: from, body: body)
    }

    /// Cut reports as `count:u8 (vm:str cutAt:u64 downtime:u64 triggered:u8)*`.
    private static func write(_ reports: [VMCutReport], _ writer: inout WireWriter) throws(WireFailure) {
        guard reports.count <= 255 else { throw .oversized }
        writer.u8(UInt8(reports.count))
        for report in reports {
            try writer.string(report.vm)
            writer.u64(report.cutAtNanoseconds)
            writer.u64(report.downtimeNanoseconds)
            writer.u8(report.triggered ? 1 : 0)
        }
    }

    private static func readReports(_ reader: inout WireReader) throws(WireFailure) -> [VMCutReport] {
        var reports: [VMCutReport] = []
        for _ in 0..<Int(try reader.u8()) {
            let vm = try reader.string()
            let cutAt = try reader.u64()
            let downtime = try reader.u64()
            let triggered = try reader.u8()
            guard triggered <= 1 else { throw .malformed }
            reports.append(
                VMCutReport(vm: vm, cutAtNanoseconds: cutAt, downtimeNanoseconds: downtime, triggered: triggered == 1)
            )
        }
        return reports
    }

    /// A target as `kind:u8 replicas:u8` (0 = disk, 1 = memory; replicas 1...16 for memory, 0 for disk).
    private static func write(_ target: SnapshotTarget, _ writer: inout WireWriter) throws(WireFailure) {
        guard target.kind == .disk || (1...16).contains(target.replicas) else { throw .oversized }
        writer.u8(target.kind == .disk ? 0 : 1)
        writer.u8(UInt8(target.replicas))
    }

    private static func readTarget(_ reader: inout WireReader) throws(WireFailure) -> SnapshotTarget {
        let kind = try reader.u8()
        let replicas = Int(try reader.u8())
        switch (kind, replicas) {
        case (0, 0): return .disk
        case (1, 1...16): return SnapshotTarget(kind: .memory, replicas: replicas)
        default: throw .malformed
        }
    }

    static func type(of body: SnapshotMessage.Body) -> UInt8 {
        switch body {
        case .prepare: 1
        case .prepared: 2
        case .cut: 3
        case .cutDone: 4
        case .durable: 5
        case .commit: 6
        case .committed: 7
        case .abort: 8
        case .aborted: 9
        case .failed: 10
        case .request: 11
        case .progress: 12
        case .restore: 13
        case .restoreAnswer: 14
        case .deleteSnapshot: 15
        case .deleted: 16
        case .streamed: 17
        case .inquire: 18
        case .holding: 19
        case .catalog: 20
        case .manifestWanted: 21
        case .manifest: 22
        case .operation: 23
        case .operationAnswer: 24
        case .operationDone: 25
        case .owners: 26
        }
    }

    /// The size limit of a message with this body.
    static func limit(of body: SnapshotMessage.Body) -> Int {
        switch body {
        case .durable, .commit, .progress, .restore, .restoreAnswer, .holding, .catalog, .manifest, .owners:
            Self.maximumBlobMessageSize
        default: Self.maximumSize
        }
    }

    /// A reason cut to at most 255 UTF-8 bytes at a character boundary.
    static func shortened(_ text: String) -> String {
        guard text.utf8.count > 255 else { return text }
        var result = ""
        for character in text {
            guard result.utf8.count + String(character).utf8.count <= 252 else { break }
            result.append(character)
        }
        return result + "…"
    }
}
