import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import VNSnapCore
import VNSnapHypervisor

/// Starts this peer's VMs, watches them, and stops them cleanly on shutdown.
///
/// A VM that dies is logged and shown as `exited` in `status`; it is not restarted, because a restart
/// would silently lose the guest's state.
public final class VMSupervisor: Service, Sendable {
    /// What `status` shows for one VM.
    public struct VMStatus: Sendable, Codable, Hashable {
        /// VM name.
        public var name: String
        /// Its VIOLIN.
        public var violin: String
        /// Its MAC.
        public var mac: String
        /// `starting`, `running`, `paused`, `exited`, `failed`, `stopped`.
        public var state: String
        /// QEMU's run state from `query-status`, when reachable.
        public var runState: String?
        /// QEMU's process id, while it runs.
        public var pid: Int32?
        /// Exit status, once exited.
        public var exitStatus: Int32?
        /// Why it failed, if it did.
        public var error: String?
        /// Accelerator in use.
        public var accel: String
        /// Serial console log.
        public var serialLog: String
    }

    private struct Entry: Sendable {
        var definition: VMDefinition
        var machine: QEMUMachine
        var state: String
        var error: String?
        var exitStatus: Int32?
    }

    private let entries: Mutex<[String: Entry]>
    private let order: [String]
    private let logger: Logger
    private let onStart: @Sendable (String) async -> Void

    /// Prepares the VMs of `definitions`; nothing starts until `run`.
    public init(
        definitions: [VMDefinition],
        paths: @escaping @Sendable (VMDefinition) -> QEMUPaths,
        qemu: String = "qemu-system-x86_64",
        onStart: @escaping @Sendable (String) async -> Void = { _ in },
        logger: Logger
    ) {
        self.onStart = onStart
        var entries: [String: Entry] = [:]
        let fallback = QEMUMachine.defaultAccelerator()
        for definition in definitions {
            let accelerator = definition.accelerator ?? fallback
            if definition.accelerator == nil {
                logger.info(
                    "VM accelerator chosen automatically",
                    metadata: ["vm.name": "\(definition.name)", "vm.accel": "\(accelerator.rawValue)"]
                )
            }
            let machine = QEMUMachine(
                definition: definition,
                accelerator: accelerator,
                paths: paths(definition),
                executable: qemu,
                logger: logger
            )
            entries[definition.name] = Entry(definition: definition, machine: machine, state: "starting")
        }
        self.entries = Mutex(entries)
        self.order = definitions.map(\.name)
        self.logger = logger
    }

    /// Starts every VM, supervises them until graceful shutdown, then stops them all.
    public func run() async throws {
        // !-safe: `order` holds exactly the keys of `entries`.
        let machines = self.entries.withLock { entries in self.order.map { entries[$0]!.machine } }
        await withTaskGroup(of: Void.self) { group in
            for machine in machines {
                group.addTask { await self.supervise(machine) }
            }
            try? await gracefulShutdown()
            self.markStopping()
            await withTaskGroup(of: Void.self) { stops in
                for machine in machines {
                    stops.addTask { await machine.stop() }
                }
            }
            group.cancelAll()
        }
        self.logger.info("All VMs stopped")
    }

    private func supervise(_ machine: QEMUMachine) async {
        let name = machine.definition.name
        do {
            // QEMU's own output goes next to the serial log, in the VM's directory.
            let directory = (machine.paths.serialLog as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try await machine.start(stderrLog: directory + "/qemu.log")
            await self.onStart(name)
            self.update(name) { $0.state = "running" }
        } catch {
            self.logger.error("VM failed to start", metadata: ["vm.name": "\(name)", "vm.error": "\(error)"])
            self.update(name) {
                $0.state = "failed"
                $0.error = "\(error)"
            }
            await machine.stop()
            return
        }
        let status = await machine.exitStatus()
        let wasStopping = self.entries.withLock { $0[name]?.state == "stopping" }
        self.update(name) {
            $0.state = wasStopping ? "stopped" : "exited"
            $0.exitStatus = status
        }
        if wasStopping {
            self.logger.info("VM stopped", metadata: ["vm.name": "\(name)"])
        } else {
            self.logger.error("VM exited unexpectedly", metadata: ["vm.name": "\(name)", "vm.exit": "\(status)"])
        }
    }

    /// Marks every VM as stopping, so their exits are not reported as crashes.
    public func markStopping() {
        self.entries.withLock { entries in
            for name in entries.keys where entries[name]!.state == "running" {  // !-safe, iterating keys
                entries[name]!.state = "stopping"
            }
        }
    }

    private func update(_ name: String, _ body: (inout Entry) -> Void) {
        self.entries.withLock { entries in
            if var entry = entries[name] {
                body(&entry)
                entries[name] = entry
            }
        }
    }

    /// The VMs as `status` shows them; asks each running QEMU for its run state.
    public func status() async -> [VMStatus] {
        let snapshot = self.entries.withLock { entries in self.order.compactMap { entries[$0] } }
        var result: [VMStatus] = []
        for entry in snapshot {
            var runState: String?
            if entry.state == "running", let monitor = await entry.machine.monitor {
                runState = try? await monitor.execute("query-status", timeout: .seconds(2))["status"]?.stringValue
            }
            result.append(
                VMStatus(
                    name: entry.definition.name,
                    violin: entry.definition.violin,
                    mac: entry.definition.mac.description,
                    state: entry.state,
                    runState: runState,
                    pid: await entry.machine.pid,
                    exitStatus: entry.exitStatus,
                    error: entry.error,
                    accel: entry.machine.accelerator.rawValue,
                    serialLog: entry.machine.paths.serialLog
                )
            )
        }
        return result
    }
}
