import Foundation

/// Two peers with a disk workload: h1 runs `diskvm` (diskseq on a fresh qcow2 of at least 16 MiB), h2 an idle VM.
extension LiveCluster {
    /// The config of a one-VIOLIN peer running `vms`.
    func diskConfig(_ host: String, violin: String, vni: Int, vms: String) -> String {
        self.baseConfig(host) + "\n[[violins]]\nname = \"\(violin)\"\nvni = \(vni)\n" + vms
    }

    /// Makes h1's disk and starts both peers; returns the configured disk and h1's VM config (to start it again).
    func startDiskPair(violin: String, vni: Int, macPrefix: String, blocks: Int, pace: Int) throws -> (
        base: String, vms: String
    ) {
        let base = "\(self.host("h1").directory)/disk.qcow2"
        // Blocks of 4 KiB, 1 … blocks.
        try Shell.run(["qemu-img", "create", "-q", "-f", "qcow2", base, "\(max(16, (blocks + 1) / 256 + 1))M"])
        let vms = Self.guestVM(
            name: "diskvm",
            violin: violin,
            mac: "\(macPrefix):01",
            append: "vnsnap.role=diskseq vnsnap.count=\(blocks) vnsnap.pace=\(pace)",
            disk: base
        )
        try self.startPeer("h1", config: self.diskConfig("h1", violin: violin, vni: vni, vms: vms))
        let idle = Self.guestVM(name: "idle", violin: violin, mac: "\(macPrefix):02", append: "")
        try self.startPeer("h2", config: self.diskConfig("h2", violin: violin, vni: vni, vms: idle))
        return (base, vms)
    }
}
