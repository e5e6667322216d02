import CVNSnapSys
import Foundation
import Logging
import NIOCore
import NIOPosix
import VNSnapCore

/// One running `qemu-system-x86_64` process and its monitor connection.
///
/// Started with `start` (or found running from an earlier run of the peer with `reattach`), supervised through
/// `exitStatus()`, stopped with `stop` (quit over QMP, then SIGTERM, then SIGKILL by pid), or left running for the
/// next run of the peer with `detach`. QEMU runs in a process group of its own, so it outlives the peer.
public actor QEMUMachine {
    /// The VM as defined.
    nonisolated public let definition: VMDefinition
    /// Where its sockets and logs are (once in place: see `staging`).
    nonisolated public let paths: QEMUPaths
    /// Where a machine started beside a running one of the same VM (a restore) keeps them until
    /// `moveIntoPlace`; `nil` for a machine started in place.
    nonisolated public let staging: QEMUPaths?
    /// The accelerator chosen when it started.
    nonisolated public let accelerator: VMDefinition.Accelerator
    private let executable: String
    private let logger: Logger
    private let process = Process()
    private var qmp: QMPClient?
    private var exitWaiters: [CheckedContinuation<Int32, Never>] = []
    private var exitCode: Int32?
    /// The process id of a QEMU found running (`reattach`), not started by this machine.
    private var attachedPID: Int32?
    private var watcher: Task<Void, Never>?

    /// The exit status recorded for a reattached QEMU, whose real one only its parent (init) learns.
    public static let unknownExitStatus: Int32 = -1
    /// Prepares a machine; nothing runs until `start`.
    public init(
        definition: VMDefinition,
        accelerator: VMDefinition.Accelerator,
        paths: QEMUPaths,
        staging: QEMUPaths? = nil,
        executable: String = "qemu-system-x86_64",
        logger: Logger
    ) {
        self.definition = definition
        self.accelerator = accelerator
        self.paths = paths
        self.staging = staging
        self.executable = executable
        var logger = logger
        logger[metadataKey: "vm.name"] = "\(definition.name)"
        self.logger = logger
    }

    /// The process id, once started (or reattached).
    public var pid: Int32? {
        if let attachedPID = self.attachedPID { return attachedPID }
        return self.process.isRunning || self.exitCode != nil ? self.process.processIdentifier : nil
    }

    /// Whether it was found running from an earlier run of the peer rather than started by this one.
    public var isReattached: Bool { self.attachedPID != nil }

    /// The monitor client, once connected.
    public var monitor: QMPClient? { self.qmp }

    /// Starts QEMU and connects to its monitor; with `incoming`, it waits for its state (`QEMUSnapshot.restore`).
    public func start(startPaused: Bool = false, incoming: Bool = false, stderrLog: String) async throws {
        let launch = self.staging ?? self.paths
        // A QEMU of this VM still running here keeps its sockets: removing them would orphan it.
        let holder = vnsnap_lock_holder(launch.pidFile)
        guard holder <= 0 else {
            throw QMPError(
                .commandFailed,
                "VM \(self.definition.name)'s QEMU (process \(holder)) still runs from an earlier start; reattach it or stop it"
            )
        }
        for stale in [launch.qmpSocket, launch.nicSocket] {
            try? FileManager.default.removeItem(atPath: stale)
        }
        let args = QEMUCommandLine.arguments(
            for: self.definition,
            accelerator: self.accelerator,
            paths: launch,
            startPaused: startPaused,
            incoming: incoming
        )
        self.process.executableURL = URL(fileURLWithPath: try Self.resolve(self.executable))
        self.process.arguments = args
        _ = FileManager.default.createFile(atPath: stderrLog, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrLog))
        self.process.standardOutput = log
        self.process.standardError = log
        self.process.standardInput = FileHandle.nullDevice
        self.process.terminationHandler = { [weak self] process in
            let status = process.terminationStatus
            guard let self else { return }
            Task { await self.exited(status) }
        }
        try self.process.run()
        self.logger.info(
            "QEMU started",
            metadata: ["vm.pid": "\(self.process.processIdentifier)", "vm.accel": "\(self.accelerator.rawValue)"]
        )
        self.qmp = try await self.connectMonitor()
    }

    /// Takes back this VM's QEMU if one still runs from an earlier run of the peer (issue 14): proven to be this VM
    /// (`QEMUProcessIdentity`, then QMP `query-name`), its monitor connected, its exit watched. Returns `false`
    /// when none runs (start one); throws when what runs there is not this VM.
    public func reattach() async throws -> Bool {
        guard self.exitCode == nil, self.attachedPID == nil, self.process.processIdentifier == 0 else { return false }
        guard let pid = try QEMUProcessIdentity.find(name: self.definition.name, paths: self.paths) else {
            return false
        }
        // A background snapshot that failed half-way (its writer was the dead peer) leaves QEMU 7.2's guest RAM
        // write-protected, and every QEMU thread, the monitor's too, blocks for good on its next write to a page not
        // saved yet (found by tools/chaos): released before anything is asked of QEMU.
        let released = vnsnap_release_write_protection(pid)
        if released > 0 {
            self.logger.warning(
                "Released the write protection a failed background snapshot had left on the VM's RAM",
                metadata: ["vm.pid": "\(pid)", "vm.ranges": "\(released)"]
            )
        } else if released < 0 {
            self.logger.notice(
                "Could not look for write protection left on the VM's RAM",
                metadata: ["vm.pid": "\(pid)", "vm.error": "\(String(cString: strerror(-released)))"]
            )
        }
        // QEMU serves one monitor client at a time with a backlog of one: right after the dead peer's connection
        // (and the identity probe's) it may refuse for a moment (EAGAIN), so it is asked again for a while.
        let deadline = ContinuousClock.now + .seconds(15)
        var connected: QMPClient?
        while connected == nil {
            do {
                connected = try await QMPClient.connect(path: self.paths.qmpSocket, logger: self.logger)
            } catch {
                guard ContinuousClock.now < deadline, QEMUProcessIdentity.isAlive(pid) else { throw error }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        let qmp = connected!  // !-safe, the loop ends only with it set
        let name = try? await qmp.execute("query-name", timeout: .seconds(5))["name"]?.stringValue
        guard name == self.definition.name else {
            await qmp.close()
            throw QEMUProcessIdentity.Mismatch(
                description:
                    "process \(pid) at \(self.paths.qmpSocket) says it is \(name ?? "unnamed"), not \(self.definition.name)"
            )
        }
        self.attachedPID = pid
        self.qmp = qmp
        self.logger.info("QEMU reattached", metadata: ["vm.pid": "\(pid)"])
        // Not this process's child: its exit is seen by polling (the process ends, or becomes a zombie).
        self.watcher = Task { [weak self] in
            while QEMUProcessIdentity.isAlive(pid), !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(200))
            }
            guard !Task.isCancelled else { return }
            await self?.exited(Self.unknownExitStatus)
        }
        return true
    }

    /// Lets the QEMU run on without this peer (an upgrade, `run --keep-vms`): the monitor connection closes, the
    /// process is left alone for the next run of the peer to `reattach`.
    public func detach() async {
        self.watcher?.cancel()
        await self.qmp?.close()
        self.qmp = nil
        self.logger.info("QEMU left running", metadata: ["vm.pid": "\(self.pid.map { "\($0)" } ?? "none")"])
    }

    /// Waits until the process has exited and returns its exit status.
    public func exitStatus() async -> Int32 {
        if let exitCode = self.exitCode { return exitCode }
        return await withCheckedContinuation { self.exitWaiters.append($0) }
    }

    /// Whether the process has exited.
    public var hasExited: Bool { self.exitCode != nil }

    /// Stops the VM: `quit` over QMP, then SIGTERM, then SIGKILL, each after a grace period.
    public func stop(grace: Duration = .seconds(3)) async {
        let pid = self.attachedPID ?? self.process.processIdentifier
        guard self.exitCode == nil, pid > 0 else { return }
        if let qmp = self.qmp {
            _ = try? await qmp.execute("quit", timeout: grace)
        }
        if await self.waitForExit(within: grace) { return }
        self.logger.info("QEMU did not quit over QMP; sending SIGTERM")
        kill(pid, SIGTERM)
        if await self.waitForExit(within: grace) { return }
        self.logger.info("QEMU ignored SIGTERM; sending SIGKILL")
        kill(pid, SIGKILL)
        _ = await self.waitForExit(within: grace)
    }

    private func waitForExit(within limit: Duration) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while self.exitCode == nil, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return self.exitCode != nil
    }

    private func exited(_ status: Int32) async {
        guard self.exitCode == nil else { return }
        self.exitCode = status
        await self.qmp?.close()
        for waiter in self.exitWaiters { waiter.resume(returning: status) }
        self.exitWaiters.removeAll()
    }

    private func connectMonitor() async throws -> QMPClient {
        // Generous: on a loaded 2-core host a TCG QEMU can take many seconds to create its monitor socket.
        let deadline = ContinuousClock.now + .seconds(45)
        var lastError: (any Error)?
        let socket = (self.staging ?? self.paths).qmpSocket
        while ContinuousClock.now < deadline {
            if self.exitCode != nil { break }
            if FileManager.default.fileExists(atPath: socket) {
                do {
                    return try await QMPClient.connect(path: socket, logger: self.logger)
                } catch {
                    lastError = error
                }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        if let code = self.exitCode {
            throw QMPError(.disconnected, "QEMU exited with status \(code) before its monitor was ready")
        }
        throw lastError ?? QMPError(.timeout, "QMP socket \(socket) did not appear")
    }

    /// A staged machine takes its place: its monitor socket, NIC socket and serial log move from `staging` to
    /// `paths` (renamed: QEMU keeps using them, and the switch port's sends to the NIC path reach it from now on).
    /// The machine that held `paths` must have exited.
    public func moveIntoPlace() throws {
        guard let staging = self.staging else { return }
        let moves = [
            (staging.nicSocket, self.paths.nicSocket), (staging.qmpSocket, self.paths.qmpSocket),
            (staging.serialLog, self.paths.serialLog), (staging.pidFile, self.paths.pidFile),
        ]
        for (from, to) in moves where rename(from, to) != 0 {
            throw QMPError(.commandFailed, "moving \(from) to \(to): \(String(cString: strerror(errno)))")
        }
    }

    /// Resolves a bare executable name through `PATH`.
    static func resolve(_ executable: String) throws -> String {
        if executable.contains("/") { return executable }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(executable)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw QMPError(.disconnected, "\(executable) not found in PATH (install qemu-system-x86)")
    }

    /// `kvm` if /dev/kvm can be opened read-write, else `tcg`.
    public static func defaultAccelerator() -> VMDefinition.Accelerator {
        let fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)
        if fd >= 0 {
            close(fd)
            return .kvm
        }
        return .tcg
    }
}
