import Foundation
import VNSnapCore
import VNSnapPeer

/// The text forms of snapshots for `snapshot`, `list`, `show` and `restore`.
enum SnapshotFormatter {
    /// One row of `list --json`.
    struct ListRow: Codable {
        var id: UInt64
        var name: String
        var violin: String
        var createdAt: String
        var vms: Int
        var storedBytes: UInt64
        var mode: String
        var state: String

        init(_ entry: SnapshotCatalog.Entry) {
            self.id = entry.id
            self.name = entry.name
            self.violin = entry.violin
            self.createdAt = SnapshotFormatter.time(entry.createdAtNanoseconds)
            self.vms = entry.manifest?.vms.count ?? 0
            self.storedBytes = entry.manifest.map(SnapshotFormatter.storedBytes) ?? 0
            self.mode = entry.mode
            self.state = entry.state
        }
    }

    /// One progress line, stamped with the seconds since `started`.
    static func progress(_ line: String, since started: ContinuousClock.Instant, toStandardError: Bool) {
        let text = String(format: "[%6.2f s] %@\n", started.duration(to: .now).inSeconds, line)
        FileHandle(fileDescriptor: toStandardError ? STDERR_FILENO : STDOUT_FILENO).write(Data(text.utf8))
    }

    /// A manifest as `snapshot` and `show` print it: the stored JSON, or the summary and the per-VM table.
    static func show(_ manifest: SnapshotManifest, json: Bool, locations: [String: [String: String]] = [:]) throws {
        if json {
            print(String(decoding: try manifest.encoded(), as: UTF8.self))
        } else {
            print(Self.summary(manifest), terminator: "")
            print(Self.table(manifest), terminator: "")
            print(Self.disks(manifest), terminator: "")
            print(Self.replicas(manifest, locations: locations), terminator: "")
        }
    }

    /// Where each VM's images are: on store peers (memory targets; with where each store holds it now, when
    /// asked) or on the VM's own peer.
    static func replicas(_ manifest: SnapshotManifest, locations: [String: [String: String]] = [:]) -> String {
        guard manifest.vms.contains(where: { $0.replicas != nil }) else {
            return "images on each VM's peer's disk\n"
        }
        return manifest.vms.map { vm in
            let stores = (vm.replicas ?? [vm.peer]).map { store in
                locations[vm.name]?[store].map { "\(store) (\($0))" } ?? store
            }
            return
                "image of \(vm.name) on store peers \(stores.joined(separator: ", ")); channel log also on \(vm.peer)\n"
        }.joined()
    }

    /// Each VM's disk as frozen at the cut, frozen image first, on the VM's peer.
    static func disks(_ manifest: SnapshotManifest) -> String {
        var text = ""
        for vm in manifest.vms {
            guard let layers = vm.disk else { continue }
            text += "disk of \(vm.name) on \(vm.peer), frozen at the cut:\n"
            for layer in layers {
                text +=
                    "  \(layer.path) (\(layer.format), \(Self.mib(layer.bytes)) MiB, blake2b \(layer.digest.prefix(16))…)\n"
            }
            if let backing = vm.diskBacking {
                text += "  on \(backing.files) backing file(s), blake2b of the chain \(backing.digest.prefix(16))…\n"
            }
        }
        return text
    }

    static func time(_ nanoseconds: UInt64) -> String {
        ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(nanoseconds) / 1e9))
    }

    static func storedBytes(_ manifest: SnapshotManifest) -> UInt64 {
        manifest.vms.reduce(0) { $0 + $1.image.storedBytes } + manifest.channels.reduce(0) { $0 + $1.image.storedBytes }
    }

    static func ms(_ nanoseconds: UInt64) -> String {
        String(format: "%.1f", Double(nanoseconds) / 1e6)
    }

    static func mib(_ bytes: UInt64) -> String {
        ByteCount.mebibytes(bytes)
    }

    /// Left-aligned columns.
    static func columns(_ rows: [[String]]) -> String {
        guard let first = rows.first else { return "" }
        let widths = first.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }.joined(separator: "\n") + "\n"
    }

    static func list(_ entries: [SnapshotCatalog.Entry]) -> String {
        guard !entries.isEmpty else { return "no committed snapshots\n" }
        var rows = [["ID", "NAME", "VIOLIN", "CREATED", "VMS", "SIZE MiB", "MODE", "STATE"]]
        for entry in entries {
            let row = ListRow(entry)
            rows.append([
                "\(row.id)", row.name, row.violin, row.createdAt, "\(row.vms)", Self.mib(row.storedBytes), row.mode,
                row.state,
            ])
        }
        return Self.columns(rows)
    }

    static func summary(_ manifest: SnapshotManifest) -> String {
        let channels = manifest.channels.reduce(0) { $0 + $1.frames }
        let undrained = manifest.channels.filter { !$0.drained }.map(\.vm)
        return """
            snapshot \(manifest.id) "\(manifest.name)" of VIOLIN \(manifest.violin) (vni \(manifest.vni)), epoch \(manifest.epoch), \
            mode \(manifest.mode.rawValue), term \(manifest.term), initiator \(manifest.initiator)
            created \(Self.time(manifest.createdAtNanoseconds)); \(manifest.vms.count) VMs, \
            \(Self.mib(Self.storedBytes(manifest))) MiB stored; channel state: \(channels) frames in flight recorded\
            \(undrained.isEmpty ? "" : " (not drained for \(undrained.joined(separator: ", ")))")

            """
    }

    /// The per-VM table (DESIGN §8), milliseconds and MiB.
    static func table(_ manifest: SnapshotManifest) -> String {
        var rows = [
            [
                "VM", "PEER", "UPTIME", "DOWNTIME", "STALL", "STALL AT", "TCP BACKOFF", "DISRUPTION", "CUT SKEW",
                "HELD", "DROPPED",
                "RECORDED", "RAW MiB", "STORED MiB", "DURABLE",
            ]
        ]
        for vm in manifest.vms {
            let m = vm.measurements
            rows.append([
                vm.name, vm.peer, Self.ms(m.uptime), Self.ms(m.downtime), Self.ms(m.stall),
                m.stallStartAfterCut.map { String(format: "%+.1f", Double($0) / 1e6) } ?? "-", Self.ms(m.tcpBackoff),
                Self.ms(m.disruption), Self.ms(m.cutSkew), "\(m.held)", "\(m.dropped)", "\(m.recorded)",
                Self.mib(vm.image.rawBytes), Self.mib(vm.image.storedBytes), Self.ms(m.timeToDurable),
            ])
        }
        return Self.columns(rows) + "(times in ms; STALL AT: where the stall began, from the VM's cut)\n"
    }

    static func restoreTable(_ timings: [String: [String: RestoreTimings]]) -> String {
        var perVM: [String: (peer: String, steps: [String: Double], injected: Int)] = [:]
        for (step, peers) in timings {
            for (peer, timing) in peers {
                for (vm, ms) in timing.milliseconds {
                    perVM[vm, default: (peer, [:], 0)].steps[step] = ms
                }
                for (vm, count) in timing.injected { perVM[vm]?.injected = count }
            }
        }
        let steps = RestoreStep.forward.map { "\($0)" }
        var rows = [["VM", "PEER"] + steps.map { "\($0.uppercased()) ms" } + ["FRAMES RE-INJECTED"]]
        for (vm, row) in perVM.sorted(by: { $0.key < $1.key }) {
            let cells = steps.map { step in row.steps[step].map { String(format: "%.1f", $0) } ?? "-" }
            rows.append([vm, row.peer] + cells + ["\(row.injected)"])
        }
        return "restored and resumed\n" + Self.columns(rows)
    }
}
