import Foundation
import Logging
import NIOCore
import NIOPosix
import VNSnapCore

/// One running `qemu-system-x86_64` process and its monitor connection.
///
/// Started with `start`, supervised through `exitStatus()`, stopped with `stop` (quit over QMP, then
/// SIGTERM, then SIGKILL by pid), so a VM is never left behind by the peer.
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

    /// The process id, once started.
    public var pid: Int32? { self.process.isRunning || self.exitCode != nil ? self.process.processIdentifier : nil }

    /// The monitor client, once connected.
    public var monitor: QMPClient? { self.qmp }

    /// Starts QEMU and connects to its monitor; with `incoming`, it waits for its state (`QEMUSnapshot.restore`).
    public func start(startPaused: Bool = false, incoming: Bool = false, stderrLog: String) async throws {
        let launch = self.staging ?? self.paths
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

    /// Waits until the process has exited and returns its exit status.
    public func exitStatus() async -> Int32 {
        if let exitCode = self.exitCode { return exitCode }
        return await withCheckedContinuation { self.exitWaiters.append($0) }
    }

    /// Whether the process has exited.
    public var hasExited: Bool { self.exitCode != nil }

    /// Stops the VM: `quit` over QMP, then SIGTERM, then SIGKILL, each after a grace period.
    public func stop(grace: Duration = .seconds(3)) async {
        guard self.exitCode == nil, self.process.processIdentifier > 0 else { return }
        if let qmp = self.qmp {
            _ = try? await qmp.execute("quit", timeout: grace)
        }
        if await self.waitForExit(within: grace) { return }
        self.logger.info("QEMU did not quit over QMP; sending SIGTERM")
        kill(self.process.processIdentifier, SIGTERM)
        if await self.waitForExit(within: grace) { return }
        self.logger.info("QEMU ignored SIGTERM; sending SIGKILL")
        kill(self.process.processIdentifier, SIGKILL)
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
            (staging.serialLog, self.paths.serialLog),
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
