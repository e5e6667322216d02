import Foundation
import NIOCore
import NIOPosix
import VNSnapCore
import VNSnapHypervisor
import VNSnapImage

/// VMs' disk files (DESIGN §6): pinned when frozen at a cut, merged and removed once no snapshot needs them.
extension SnapshotService {
    /// How often the disk chains are looked at besides after a delete.
    static let diskPassInterval = Duration.seconds(30)

    /// The manifest's layers of a disk frozen at a cut (`nil` without a disk), each file hashed once and pinned
    /// (a frozen file is never written again but by a merge, which pins it anew).
    func describeDisk(_ chain: [VMDefinition.Disk], vm: String) async throws -> [SnapshotManifest.DiskLayer]? {
        guard !chain.isEmpty else { return nil }
        let directory = DiskLayers(config: self.config).directory(vm)
        return try await NIOThreadPool.singleton.runIfActive {
            try DiskPins.update(directory: directory) { pins in
                try chain.enumerated().map { index, file in
                    if let pin = pins.pins[file.path], pin.merging == nil { return pin.layer(file.path) }
                    let (bytes, digest) = try FileDigest.of(file.path, label: "VM \(vm), disk")
                    if pins.pins[file.path] == nil {
                        let parent = index + 1 < chain.count ? chain[index + 1].path : nil
                        pins.pins[file.path] = DiskPins.Pin(
                            format: file.format,
                            bytes: bytes,
                            digest: digest,
                            parent: parent
                        )
                    }
                    return SnapshotManifest.DiskLayer(
                        path: file.path,
                        format: file.format,
                        bytes: bytes,
                        digest: digest
                    )
                }
            }
        }
    }

    /// Checks the disk a snapshot froze of a VM: against the pins when every file of its chain has one (and
    /// against the manifest for what no merge rewrote), else against the manifest alone. Blocking.
    static func verifyDisk(_ entry: SnapshotManifest.VM, directory: String, label: String) throws {
        guard let frozen = entry.disk?.first else { return }
        let chain = try QEMUDisk.chain(ofFile: frozen.path)
        let pins = try DiskPins.load(directory: directory)
        if try pins.check(chain, label: label) {
            // Files no merge rewrote must still be what the manifest committed.
            let rewritten = chain.contains { pins.pins[$0.path]?.rewritten == true }
            if pins.pins[frozen.path]?.rewritten != true, pins.pins[frozen.path]?.digest != frozen.digest {
                throw ImageError(.corrupt, "\(label): disk layer 0: \(frozen.path) is not the file the snapshot froze")
            }
            if !rewritten {
                // !-safe: `check` found a pin for every file.
                let backing = chain.dropFirst().map { pins.pins[$0.path]!.layer($0.path) }
                try Self.checkBacking(backing, entry: entry, label: label)
            }
            return
        }
        for (index, layer) in (entry.disk ?? []).enumerated() {
            let found = try FileDigest.of(layer.path, label: "\(label), disk layer \(index)")
            guard found.bytes == layer.bytes, found.digest == layer.digest else {
                throw ImageError(
                    .corrupt,
                    "\(label), disk layer \(index): \(layer.path) does not match its digest (\(found.bytes) bytes, \(layer.bytes) committed)"
                )
            }
        }
        // The files below the frozen image, as its own header names them, against the committed digest.
        let backing = try chain.dropFirst().map { file in
            let found = try FileDigest.of(file.path, label: "\(label), disk backing file")
            return SnapshotManifest.DiskLayer(
                path: file.path,
                format: file.format,
                bytes: found.bytes,
                digest: found.digest
            )
        }
        try Self.checkBacking(backing, entry: entry, label: label)
    }

    private static func checkBacking(_ backing: [SnapshotManifest.DiskLayer], entry: SnapshotManifest.VM, label: String)
        throws
    {
        let digest = backing.isEmpty ? nil : LocalChunkStore.hash(SnapshotManifest.DiskBacking.digestInput(backing))
        guard digest == entry.diskBacking?.digest, backing.count == entry.diskBacking?.files ?? 0 else {
            throw ImageError(
                .corrupt,
                "\(label): the backing files of its frozen disk (\(backing.map(\.path).joined(separator: ", "))) do not match the snapshot's digest"
            )
        }
    }

    /// Merges and removes the disk files of this peer's VMs that no snapshot needs, in the background, when no
    /// snapshot or restore runs here (and stops as soon as one begins).
    func startDiskPass() async {
        // Most peers have no VM with a disk: they read no manifests every 30 s.
        guard self.hosted.all.contains(where: { $0.disk != nil }), await self.diskIdle(),
            let entries = try? await self.catalog.list()
        else { return }
        var vms: [DiskMerger.VMDisk] = []
        let layers = DiskLayers(config: self.config)
        for definition in self.hosted.all {
            // Only VMs running here and seen running: a QEMU not reattached yet may write the very files a merge
            // would rewrite, and a VM moved away runs elsewhere (on shared storage, on these files).
            guard let configured = definition.disk, !self.hosted.isAdopted(definition.name),
                !self.supervisor.hasMoved(definition.name), let monitor = await self.monitor(definition.name)
            else { continue }
            // Frozen files of the VM's snapshots taken on any peer (they may share storage).
            let pinned = entries.compactMap { entry in
                entry.manifest?.vms.first { $0.name == definition.name }?.disk?.first?.path
            }
            vms.append(
                DiskMerger.VMDisk(
                    name: definition.name,
                    configured: configured,
                    monitor: monitor,
                    recordedActive: layers.recordedActive(definition.name),
                    pinned: Set(pinned)
                )
            )
        }
        guard !vms.isEmpty else { return }
        let (merger, disks) = (self.diskMerger, vms)
        self.spawn({ await merger.pass(disks) { await self.diskIdle() } }) { _ in }
    }

    /// Whether no snapshot or restore is under way here (a pending one may still pin a newly frozen file).
    func diskIdle() async -> Bool {
        guard self.participants.values.allSatisfy({ $0.ended != nil }),
            self.stagedMachines.values.allSatisfy(\.isEmpty),
            self.switchedOver.isEmpty, self.restores.isEmpty, self.holder.isSettled
        else { return false }
        return (try? await self.catalog.pending().isEmpty) ?? false
    }
}
