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
    /// VM names in the order they were added (a restore may add a lost peer's VM).
    private let order: Mutex<[String]>
    private let logger: Logger
    private let onStart: @Sendable (String) async -> Void
    private let paths: @Sendable (VMDefinition) -> QEMUPaths
    private let qemu: String

    /// Prepares the VMs of `definitions`; nothing starts until `run`.
    public init(
        definitions: [VMDefinition],
        paths: @escaping @Sendable (VMDefinition) -> QEMUPaths,
        qemu: String = "qemu-system-x86_64",
        onStart: @escaping @Sendable (String) async -> Void = { _ in },
        logger: Logger
    ) {
        self.onStart = onStart
        self.paths = paths
        self.qemu = qemu
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
        self.order = Mutex(definitions.map(\.name))
        self.logger = logger
    }

    /// Starts every VM, supervises them until graceful shutdown, then stops them all.
    public func run() async throws {
        let names = self.order.withLock { $0 }
        let machines = self.entries.withLock { entries in names.compactMap { entries[$0]?.machine } }
        await withTaskGroup(of: Void.self) { group in
            for machine in machines {
                group.addTask { await self.supervise(machine) }
            }
            try? await gracefulShutdown()
            self.markStopping()
            // The machines now: a restore may have replaced some since the start.
            let all = self.order.withLock { $0 }
            let current = self.entries.withLock { entries in all.compactMap { entries[$0]?.machine } }
            await withTaskGroup(of: Void.self) { stops in
                for machine in current {
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
        await self.watch(machine)
    }

    /// Waits for `machine` to exit and records how it ended (unless a restore replaced it meanwhile).
    private func watch(_ machine: QEMUMachine) async {
        let name = machine.definition.name
        let status = await machine.exitStatus()
        let replaced = self.entries.withLock {
            $0[name].map { $0.machine !== machine || $0.state == "restoring" } ?? true
        }
        if replaced { return }
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

    /// The running QEMU of `vm`, if it runs.
    public func machine(_ vm: String) async -> QEMUMachine? {
        guard let entry = self.entries.withLock({ $0[vm] }), entry.state == "running" else { return nil }
        return await entry.machine.hasExited ? nil : entry.machine
    }

    /// The state of every VM (`running`, `exited`, ...), by name.
    public func states() -> [String: String] {
        self.entries.withLock { $0.mapValues(\.state) }
    }

    /// A restore: stops `vm`'s QEMU (if it runs) and starts a new one, paused, waiting for its state through
    /// `migrate-incoming`, on `disk` if given (a fresh overlay on the snapshot's frozen disk). A VM new to this
    /// peer (`adopting`, a lost peer's VM placed here) is added first. The new machine is supervised like the
    /// first.
    public func restart(
        _ vm: String,
        forIncoming: Bool,
        disk: VMDefinition.Disk? = nil,
        adopting: VMDefinition? = nil
    ) async throws -> QEMUMachine {
        if let adopting, self.entries.withLock({ $0[vm] }) == nil {
            let machine = QEMUMachine(
                definition: adopting,
                accelerator: adopting.accelerator ?? QEMUMachine.defaultAccelerator(),
                paths: self.paths(adopting),
                executable: self.qemu,
                logger: self.logger
            )
            self.entries.withLock { $0[vm] = Entry(definition: adopting, machine: machine, state: "restoring") }
            self.order.withLock { $0.append(vm) }
        }
        guard var definition = self.entries.withLock({ $0[vm] })?.definition,
            let entry = self.entries.withLock({ $0[vm] })
        else {
            throw QMPError(.commandFailed, "no VM \(vm) on this peer")
        }
        if let disk { definition.disk = disk }
        self.update(vm) {
            $0.state = "restoring"
            $0.definition = definition
        }
        await entry.machine.stop()
        let machine = QEMUMachine(
            definition: definition,
            accelerator: entry.machine.accelerator,
            paths: self.paths(definition),
            executable: self.qemu,
            logger: self.logger
        )
        self.update(vm) {
            $0.machine = machine
            $0.error = nil
            $0.exitStatus = nil
        }
        do {
            let directory = (machine.paths.serialLog as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try await machine.start(startPaused: true, incoming: forIncoming, stderrLog: directory + "/qemu.log")
            await self.onStart(vm)
        } catch {
            self.update(vm) {
                $0.state = "failed"
                $0.error = "restore: \(error)"
            }
            await machine.stop()
            throw error
        }
        self.update(vm) { $0.state = "running" }
        Task { await self.watch(machine) }
        return machine
    }

    /// Marks every VM as stopping, so their exits are not reported as crashes.
    public func markStopping() {
        self.entries.withLock { entries in
            for name in entries.keys where ["running", "restoring"].contains(entries[name]!.state) {  // !-safe, its keys
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
        let names = self.order.withLock { $0 }
        let snapshot = self.entries.withLock { entries in names.compactMap { entries[$0] } }
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
