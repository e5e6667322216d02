import Foundation
import VNSnapCore

/// What one participant knows about its VMs' snapshot and sends with `durable` (JSON): the manifest is built
/// from these and the cut reports.
struct ParticipantReport: Sendable, Codable, Hashable {
    /// One VM's image, channel log and measurements as its peer saw them.
    struct VM: Sendable, Codable, Hashable {
        var name: String
        var image: SnapshotManifest.ImageDescriptor
        var channel: SnapshotManifest.ChannelLog
        /// Longest gap in its payload frames, nanoseconds.
        var stall: UInt64
        /// Where that gap began relative to the cut, nanoseconds.
        var stallStartAfterCut: Int64?
        var counters: EpochGate.Counters
        /// From the cut until the image was durable, nanoseconds.
        var timeToDurable: UInt64
        /// Whether QEMU's NIC queue was still not empty when the wait before the pause ran out.
        var queueWaitExpired: Bool
        /// Its disk as frozen at the cut, if it has one, and the digest of its backing chain.
        var disk: [SnapshotManifest.DiskLayer]?
        var diskBacking: SnapshotManifest.DiskBacking?
        /// The store peers holding its images (memory targets).
        var replicas: [String]?
        /// The VM as this peer runs it (its configured disk, not an overlay), so it can be restored elsewhere.
        var definition: VMDefinition?
        /// The cluster key id its chunks were sealed under.
        var sealedWith: UInt32?
    }

    /// The peer's name.
    var peer: String
    /// Its VMs of the VIOLIN.
    var vms: [VM]

    func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(self))
    }

    static func decode(_ bytes: [UInt8]) throws -> ParticipantReport {
        try JSONDecoder().decode(ParticipantReport.self, from: Data(bytes))
    }
}

extension SnapshotManifest {
    /// The manifest of a snapshot whose participants all reported durable images (DESIGN §8's measurements).
    static func build(
        key: SnapshotKey,
        name: String,
        vni: UInt32,
        mode: SnapshotMode,
        initiator: String,
        cuts: [PeerID: [VMCutReport]],
        reports: [PeerReport],
        now: UInt64
    ) -> SnapshotManifest {
        let cutsByVM = Dictionary(cuts.values.flatMap { $0 }.map { ($0.vm, $0) }, uniquingKeysWith: { a, _ in a })
        let earliest = cutsByVM.values.map(\.cutAtNanoseconds).min() ?? 0
        var vms: [SnapshotManifest.VM] = []
        var channels: [SnapshotManifest.ChannelLog] = []
        for report in reports {
            for vm in report.report.vms {
                let cut =
                    cutsByVM[vm.name]
                    ?? VMCutReport(vm: vm.name, cutAtNanoseconds: earliest, downtimeNanoseconds: 0, triggered: false)
                let downtime = cut.downtimeNanoseconds
                vms.append(
                    SnapshotManifest.VM(
                        name: vm.name,
                        peer: report.report.peer,
                        cut: cut,
                        image: vm.image,
                        measurements: SnapshotManifest.VMMeasurements(
                            uptime: vm.timeToDurable > downtime ? vm.timeToDurable - downtime : 0,
                            downtime: downtime,
                            stall: vm.stall,
                            cutSkew: cut.cutAtNanoseconds - earliest,
                            held: vm.counters.held,
                            dropped: vm.counters.dropped,
                            recorded: vm.counters.recorded,
                            timeToDurable: vm.timeToDurable,
                            stallStartAfterCut: vm.stallStartAfterCut
                        ),
                        disk: vm.disk,
                        diskBacking: vm.diskBacking,
                        replicas: vm.replicas,
                        definition: vm.definition,
                        sealedWith: vm.sealedWith
                    )
                )
                channels.append(vm.channel)
            }
        }
        return SnapshotManifest(
            key: key,
            name: name,
            vni: vni,
            mode: mode,
            createdAtNanoseconds: now,
            initiator: initiator,
            vms: vms,
            channels: channels
        )
    }

    /// A participant's report with who sent it.
    struct PeerReport {
        var peer: PeerID
        var report: ParticipantReport
    }
}
