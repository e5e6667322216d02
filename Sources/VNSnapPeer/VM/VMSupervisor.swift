import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import VNSnapCore
import VNSnapHypervisor

/// Starts this peer's VMs (or reattaches the ones still running from an earlier start of the peer), watches them,
/// and stops them cleanly on shutdown, or leaves them running for the next start (`keepRunning`).
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
        /// Whether its QEMU was found running from an earlier start of the peer and taken back.
        public var reattached: Bool?
        /// Where it runs instead, when another peer owns it (`moved to h4 (generation 3)`).
        public var movedTo: String?
        /// Whether the fence paused it (this peer has seen no majority for `fence_after_s`).
        public var fenced: Bool?
    }

    struct Entry: Sendable {
        var definition: VMDefinition
        var machine: QEMUMachine
        var state: String
        var error: String?
        var exitStatus: Int32?
        var movedTo: String?
        var fenced = false
    }

    let entries: Mutex<[String: Entry]>
    /// VM names in the order they were added (a restore may add a lost peer's VM).
    let order: Mutex<[String]>
    let logger: Logger
    private let onStart: @Sendable (String) async -> Void
    private let onReattach: @Sendable (String) async -> Void
    private let keepRunning: Bool
    private let peerName: String
    private let admission: @Sendable (VMDefinition) async -> VMOwnership?
    private let paths: @Sendable (VMDefinition) -> QEMUPaths
    private let qemu: String

    /// Prepares the VMs of `definitions`; nothing starts until `run`.
    public init(
        definitions: [VMDefinition],
        paths: @escaping @Sendable (VMDefinition) -> QEMUPaths,
        qemu: String = "qemu-system-x86_64",
        keepRunning: Bool = false,
        peerName: String = "",
        admission: @escaping @Sendable (VMDefinition) async -> VMOwnership? = { _ in nil },
        onReattach: @escaping @Sendable (String) async -> Void = { _ in },
        onStart: @escaping @Sendable (String) async -> Void = { _ in },
        logger: Logger
    ) {
        self.onStart = onStart
        self.onReattach = onReattach
        self.keepRunning = keepRunning
        self.peerName = peerName
        self.admission = admission
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

    /// Starts (or reattaches) every VM, supervises them until graceful shutdown, then stops them all, or leaves
    /// them running when `keepRunning`.
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
                    stops.addTask { [keepRunning] in
                        if keepRunning { await machine.detach() } else { await machine.stop() }
                    }
                }
            }
            group.cancelAll()
        }
        self.logger.info(self.keepRunning ? "VMs left running for the next start to reattach" : "All VMs stopped")
    }

    private func supervise(_ machine: QEMUMachine) async {
        let name = machine.definition.name
        do {
            // QEMU's own output goes next to the serial log, in the VM's directory.
            let directory = machine.paths.directory
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            await self.clearStaged(directory, vm: name)
            // Only where the cluster's ownership record allows (issue 14): its owner, or no record yet.
            let record = await self.admission(machine.definition)
            let reattached = try await machine.reattach()
            switch VMStartDecision.decide(me: self.peerName, record: record, runningHere: reattached) {
            case .stayStopped(let record):
                self.markMoved(name, record)
                return
            case .stopStale(let record):
                self.markMoved(name, record)
                await machine.stop()
                self.logger.warning(
                    "Stopped a copy of a VM that another peer now runs",
                    metadata: ["vm.name": "\(name)"]
                )
                return
            case .reattach:
                await Self.resumeIfLeftPaused(machine, logger: self.logger)
                await self.onReattach(name)
            case .start:
                try await machine.start(stderrLog: directory + "/qemu.log")
            }
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

    /// Machines a restore had loaded beside the VM when the previous run of the peer died: that restore is over
    /// (its restorer rolls back, or already has), so they are stopped and their directories removed.
    private func clearStaged(_ directory: String, vm: String) async {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for entry in entries where entry.hasPrefix("staged-") {
            let staged = "\(directory)/\(entry)"
            if let pid = QEMUProcessIdentity.lockHolder(staged + "/qemu.pid") {
                kill(pid, SIGKILL)
                self.logger.warning(
                    "Stopped a machine an unfinished restore had loaded before the peer restarted",
                    metadata: ["vm.name": "\(vm)", "vm.pid": "\(pid)"]
                )
                for _ in 0..<100 where QEMUProcessIdentity.isAlive(pid) {
                    try? await Task.sleep(for: .milliseconds(20))
                }
            }
            try? FileManager.default.removeItem(atPath: staged)
        }
    }

    /// A reattached VM the previous run of the peer left paused (it died in a cut, with a migration under way):
    /// that snapshot is aborted without it, so the VM runs on.
    private static func resumeIfLeftPaused(_ machine: QEMUMachine, logger: Logger) async {
        guard let monitor = await machine.monitor,
            let state = try? await monitor.execute("query-status", timeout: .seconds(5))["status"]?.stringValue,
            state != "running"
        else { return }
        _ = try? await monitor.execute("migrate_cancel", timeout: .seconds(5))
        _ = try? await monitor.execute("cont", timeout: .seconds(5))
        logger.warning(
            "A reattached VM was left paused by the previous run of the peer; resumed",
            metadata: ["vm.name": "\(machine.definition.name)", "vm.runState": "\(state)"]
        )
    }

    /// Waits for `machine` to exit and records how it ended (unless a restore replaced it meanwhile).
    private func watch(_ machine: QEMUMachine) async {
        let name = machine.definition.name
        let status = await machine.exitStatus()
        let replaced = self.entries.withLock {
            $0[name].map { $0.machine !== machine || $0.state == "restoring" || $0.state == "moved" } ?? true
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

    /// A restore's first half (a transaction, issue 13): starts a new QEMU for `vm` beside the running one,
    /// paused and waiting for its state through `migrate-incoming`, on `disk` if given, with its sockets and
    /// logs in a `staged-*` directory of the VM's. The running machine is not touched: `promote` puts the new one in
    /// its place, `discard` gives it up. `definition` is used for a VM this peer does not run yet (a lost peer's).
    public func stage(_ vm: String, disk: VMDefinition.Disk?, definition adopting: VMDefinition?) async throws
        -> QEMUMachine
    {
        let current = self.entries.withLock { $0[vm] }
        guard var definition = current?.definition ?? adopting else {
            throw QMPError(.commandFailed, "no VM \(vm) on this peer")
        }
        if let disk { definition.disk = disk }
        let paths = self.paths(definition)
        // A directory of its own: a QEMU unlinks its sockets' paths as it exits, and an earlier restore's machine
        // (promoted, but still bound at its own staging paths) exits at this one's switch-over.
        let tag = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let directory = paths.directory + "/staged-\(tag)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let machine = QEMUMachine(
            definition: definition,
            accelerator: current?.machine.accelerator ?? definition.accelerator ?? QEMUMachine.defaultAccelerator(),
            paths: paths,
            staging: QEMUPaths(vmDirectory: directory, switchPortSocket: paths.switchPortSocket),
            executable: self.qemu,
            logger: self.logger
        )
        do {
            try await machine.start(startPaused: true, incoming: true, stderrLog: directory + "/qemu.log")
        } catch {
            await self.discard(machine)
            throw error
        }
        return machine
    }

    /// Gives up a staged machine: stops it and removes its directory.
    public func discard(_ machine: QEMUMachine) async {
        await machine.stop()
        if let staging = machine.staging {
            try? FileManager.default.removeItem(atPath: staging.directory)
        }
    }

    /// A restore's switch-over: stops `vm`'s running QEMU (if any), moves the staged `machine` into its place
    /// and supervises it from now on (a VM new to this peer is added).
    public func promote(_ vm: String, _ machine: QEMUMachine) async throws {
        let previous = self.entries.withLock { entries -> QEMUMachine? in
            guard var entry = entries[vm] else { return nil }
            entry.state = "restoring"
            entries[vm] = entry
            return entry.machine
        }
        await previous?.stop()
        try await machine.moveIntoPlace()
        if let staging = machine.staging {
            _ = rename(staging.directory + "/qemu.log", machine.paths.directory + "/qemu.log")
            try? FileManager.default.removeItem(atPath: staging.directory)
        }
        let added = self.entries.withLock { entries -> Bool in
            let isNew = entries[vm] == nil
            var entry = entries[vm] ?? Entry(definition: machine.definition, machine: machine, state: "running")
            entry.definition = machine.definition
            entry.machine = machine
            entry.state = "running"
            entry.error = nil
            entry.exitStatus = nil
            entry.movedTo = nil
            entry.fenced = false
            entries[vm] = entry
            return isNew
        }
        if added { self.order.withLock { $0.append(vm) } }
        await self.onStart(vm)
        Task { await self.watch(machine) }
    }

    /// Marks every VM as stopping, so their exits are not reported as crashes.
    public func markStopping() {
        self.entries.withLock { entries in
            // !-safe below: its own keys.
            for name in entries.keys where ["running", "restoring"].contains(entries[name]!.state) {
                entries[name]!.state = "stopping"
            }
        }
    }

    func update(_ name: String, _ body: (inout Entry) -> Void) {
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
                    serialLog: entry.machine.paths.serialLog,
                    reattached: await entry.machine.isReattached ? true : nil,
                    movedTo: entry.movedTo,
                    fenced: entry.fenced ? true : nil
                )
            )
        }
        return result
    }
}
