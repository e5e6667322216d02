import Foundation
import Logging
import Synchronization
import VNSnapCore
import VNSnapImage

/// The VMs this peer runs: the ones in its configuration, and the ones it took over when a restore placed a
/// lost peer's VMs here (DESIGN §7). An adopted VM's definition (as its snapshot recorded it) is kept durably in
/// `data_dir/adopted/VM.json`, so the peer runs it again after a restart and includes it in later snapshots.
public final class HostedVMs: Sendable {
    private let configured: [VMDefinition]
    private let adopted: Mutex<[VMDefinition]>
    private let directory: String

    /// The configured VMs of `config`, and the adopted ones found in its data directory. An adopted definition
    /// that is unreadable refuses the start (running without it would silently drop a VM); one named like a
    /// configured VM is ignored, with a warning (the configuration wins).
    public init(config: PeerConfig, logger: Logger) throws {
        self.configured = config.vms
        self.directory = "\(config.peer.dataDirectory)/adopted"
        var adopted: [VMDefinition] = []
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: self.directory)) ?? []).filter {
            $0.hasSuffix(".json")
        }
        for file in files.sorted() {
            let path = "\(self.directory)/\(file)"
            guard let data = FileManager.default.contents(atPath: path),
                let definition = try? JSONDecoder().decode(VMDefinition.self, from: data),
                "\(definition.name).json" == file
            else {
                throw SnapshotError(
                    .failed,
                    "\(path) is unreadable: it records a VM this peer took over in a restore; repair it, or remove it if the VM should no longer run here"
                )
            }
            guard !config.vms.contains(where: { $0.name == definition.name }) else {
                logger.warning(
                    "An adopted VM is also configured; running the configured one",
                    metadata: ["vm.name": "\(definition.name)", "vm.adopted": "\(path)"]
                )
                continue
            }
            guard config.violin(named: definition.violin) != nil else {
                throw SnapshotError(
                    .failed,
                    "\(path): VM \(definition.name) is on VIOLIN \(definition.violin), which this peer's configuration does not define"
                )
            }
            adopted.append(definition)
        }
        self.adopted = Mutex(adopted)
    }

    /// Every VM, configured first.
    public var all: [VMDefinition] { self.configured + self.adopted.withLock { $0 } }

    /// The VM named `name`, as configured or adopted.
    public func definition(_ name: String) -> VMDefinition? { self.all.first { $0.name == name } }

    /// The names of the VMs on `violin`.
    public func names(on violin: String) -> [String] { self.all.filter { $0.violin == violin }.map(\.name) }

    /// Whether `name` was adopted (not configured).
    public func isAdopted(_ name: String) -> Bool { self.adopted.withLock { $0.contains { $0.name == name } } }

    /// Forgets an adopted VM (its restore here failed before it ran): it is not started at the next boot.
    public func release(_ name: String) {
        guard self.isAdopted(name) else { return }
        try? FileManager.default.removeItem(atPath: "\(self.directory)/\(name).json")
        self.adopted.withLock { $0.removeAll { $0.name == name } }
    }

    /// Records durably that this peer runs `definition` from now on (a restore placed it here).
    public func adopt(_ definition: VMDefinition) throws {
        guard !self.configured.contains(where: { $0.name == definition.name }) else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        try DurableFile.write(
            Array(try encoder.encode(definition)),
            to: "\(self.directory)/\(definition.name).json",
            mode: 0o644
        )
        self.adopted.withLock { adopted in
            adopted.removeAll { $0.name == definition.name }
            adopted.append(definition)
        }
    }
}
