import Foundation
import VNSnapCore
import VNSnapPeer

/// Snapshot and restore through a peer's control socket, as `vnsnap-peer snapshot` / `restore` do.
extension LiveCluster {
    /// Sends one control request to a host's peer; a refusal throws its error.
    func request(_ host: String, _ request: ControlRequest, timeout: Duration = .seconds(300)) async throws
        -> ControlResponse
    {
        let response = try await ControlClient.request(request, socket: self.controlSocket(host), timeout: timeout)
        guard response.ok else { throw Shell.Failure(description: response.error ?? "refused without a reason") }
        return response
    }

    /// Takes a snapshot of `violin` asked on `host`; returns its manifest.
    func snapshot(
        _ host: String,
        violin: String,
        mode: SnapshotMode,
        name: String = "test",
        target: SnapshotTarget = .disk
    ) async throws -> SnapshotManifest {
        let response = try await self.request(
            host,
            ControlRequest(
                command: "snapshot",
                snapshot: SnapshotOrder(violin: violin, mode: mode, name: name, target: target)
            )
        )
        guard let manifest = response.manifest else { throw Shell.Failure(description: "no manifest") }
        return manifest
    }

    /// Restores snapshot `id` asked on `host`.
    func restore(_ host: String, id: UInt64, replay: Bool = true) async throws {
        _ = try await self.request(host, ControlRequest(command: "restore", id: id, yes: true, replay: replay))
    }

    /// The committed snapshots `host` lists.
    func list(_ host: String) async throws -> [SnapshotCatalog.Entry] {
        try await self.request(host, ControlRequest(command: "list")).snapshots ?? []
    }

    /// The last number after `prefix` in a VM's serial log (0 if none yet).
    func lastSerialNumber(host: String, vm: String, after prefix: String) -> Int {
        let data = FileManager.default.contents(atPath: self.serialLog(host: host, vm: vm)) ?? Data()
        let text = String(decoding: data, as: UTF8.self)
        return text.split(whereSeparator: \.isNewline).reversed().lazy.compactMap { line -> Int? in
            guard let range = line.range(of: prefix) else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }.first ?? 0
    }

    /// Waits until a VM's serial log shows `prefix` with a number of at least `value`.
    func waitForSerialNumber(host: String, vm: String, after prefix: String, atLeast value: Int, timeout: Duration)
        async throws
    {
        let deadline = ContinuousClock.now + timeout
        while self.lastSerialNumber(host: host, vm: vm, after: prefix) < value {
            guard ContinuousClock.now < deadline else {
                let serial = FileManager.default.contents(atPath: self.serialLog(host: host, vm: vm)) ?? Data()
                throw Shell.Failure(
                    description: "\(vm) on \(host): \(prefix)\(value) not reached within \(timeout). Serial tail:\n"
                        + String(decoding: serial.suffix(600), as: UTF8.self) + "\nPeer log tail:\n"
                        + self.peerLogSummary(host)
                )
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// QEMU's process id of every VM of a host, by name.
    func vmPIDs(_ host: String) async throws -> [String: Int32] {
        Dictionary(
            uniqueKeysWithValues: try await self.status(host).vms.compactMap { vm in vm.pid.map { (vm.name, $0) } }
        )
    }

    /// Waits for the verdict line a workload's last VM prints (`verdict=ok digest=…`, or why not) and returns it.
    func verdict(host: String, vm: String = "sink", timeout: Duration = .seconds(300)) async throws -> String {
        try await self.waitForSerial(host: host, vm: vm, containing: "verdict=", timeout: timeout)
    }
}
