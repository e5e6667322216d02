import Foundation
import Logging
import VNSnapCore
import VNSnapImage

/// Which file each VM's disk runs on now (DESIGN §6).
///
/// Every snapshot freezes a VM's running disk image and continues the VM on a new qcow2 overlay, so after the
/// first snapshot the configured file is a read-only backing file and the VM's writes live in the newest
/// overlay. The newest one is recorded durably here (`data_dir/disks/VM/active.json`), and a restarted peer runs
/// the VM on it: starting again from the configured file would lose every write since the first snapshot (and
/// writing to it would corrupt every overlay above it).
struct DiskLayers: Sendable {
    /// `data_dir/disks`.
    var directory: String

    private struct Record: Codable {
        /// The configured disk the chain started from; a record for another file is not used.
        var configured: VMDefinition.Disk
        /// The image the VM writes to.
        var active: VMDefinition.Disk
    }

    init(config: PeerConfig) {
        self.init(directory: "\(config.peer.dataDirectory)/disks")
    }

    init(directory: String) {
        self.directory = directory
    }

    /// Where `vm`'s overlays live.
    func directory(_ vm: String) -> String { "\(self.directory)/\(vm)" }

    /// A path for a new overlay of `vm`, named after what made it.
    func newOverlay(_ vm: String, label: String) -> String {
        "\(self.directory(vm))/\(label)-\(UInt64(Date().timeIntervalSince1970 * 1_000)).qcow2"
    }

    /// `definition` with its disk replaced by the recorded active overlay, when there is one for the configured
    /// disk; a record left over from another configured disk is ignored, with a warning. An unreadable record
    /// refuses: running the configured (frozen) file would lose the VM's newer writes and corrupt its overlays.
    func current(_ definition: VMDefinition, logger: Logger) throws(SnapshotError) -> VMDefinition {
        let path = self.recordPath(definition.name)
        guard let configured = definition.disk, let data = FileManager.default.contents(atPath: path) else {
            return definition
        }
        guard let record = try? JSONDecoder().decode(Record.self, from: data) else {
            throw SnapshotError(
                .failed,
                "VM \(definition.name): \(path) is unreadable, so which overlay holds the VM's disk is unknown (starting from the configured file would lose its writes since the first snapshot); repair it, or remove it to start over from the configured disk"
            )
        }
        guard record.configured == configured else {
            logger.warning(
                "Disk record is for another configured disk; running the configured one",
                metadata: ["vm.name": "\(definition.name)", "vm.diskRecord": "\(record.configured.path)"]
            )
            return definition
        }
        var current = definition
        current.disk = record.active
        return current
    }

    /// The overlay recorded as `vm`'s, whichever configured disk the record was made for (`nil` without a readable
    /// record): a disk merge keeps it, so reverting a changed `disk` setting still finds the VM's writes.
    func recordedActive(_ vm: String) -> String? {
        guard let data = FileManager.default.contents(atPath: self.recordPath(vm)) else { return nil }
        return (try? JSONDecoder().decode(Record.self, from: data))?.active.path
    }

    /// Records that `vm` now writes to `active` (durably: fsync'd, replaced atomically).
    func setActive(_ active: VMDefinition.Disk, vm: String, configured: VMDefinition.Disk) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let bytes = try encoder.encode(Record(configured: configured, active: active))
        try DurableFile.write(Array(bytes), to: self.recordPath(vm), mode: 0o644)
    }

    private func recordPath(_ vm: String) -> String { "\(self.directory(vm))/active.json" }
}
