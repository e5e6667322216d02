import Foundation
import Logging
import Testing
import VNSnapCore
import VNSnapHypervisor

/// A real QEMU guest driven over QMP: start, events on stop/cont, clean quit; and a crash seen as an exit.
@Suite(.serialized) struct QEMUMachineLiveTests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static var guest: String { ProcessInfo.processInfo.environment["VNSNAP_GUEST_DIR"] ?? repo + "/.guest" }

    func makeMachine(_ directory: String, name: String = "qmptest") -> QEMUMachine {
        let vm = VMDefinition(
            name: name,
            violin: "v",
            mac: MACAddress("52:54:00:00:00:77")!,
            memoryMiB: 128,
            vcpus: 1,
            boot: .kernel(
                kernel: Self.guest + "/vmlinuz",
                initrd: Self.guest + "/initrd.img",
                append: "console=ttyS0 quiet no_timer_check vnsnap.role=counter vnsnap.interval=200"
            ),
            accelerator: .tcg
        )
        return QEMUMachine(
            definition: vm,
            accelerator: .tcg,
            paths: QEMUPaths(vmDirectory: directory, switchPortSocket: directory + "/port.sock"),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        )
    }

    /// A fresh directory and machine, or `nil` (with an issue recorded) when the guest image is missing.
    func prepare() throws -> (String, QEMUMachine)? {
        guard FileManager.default.fileExists(atPath: Self.guest + "/vmlinuz") else {
            Issue.record("no guest image in \(Self.guest): run tools/guest-build")
            return nil
        }
        let directory = "/tmp/vnsnap-qmp-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return (directory, self.makeMachine(directory))
    }

    @Test func test_machine_stopCont_shouldEmitStopAndResumeEvents_andQuitCleanly() async throws {
        guard let (directory, machine) = try self.prepare() else { return }
        do {
            try await machine.start(stderrLog: directory + "/qemu.log")
            let monitor = try #require(await machine.monitor)
            #expect(try await monitor.execute("query-status")["status"]?.stringValue == "running")
            var events = monitor.events.makeAsyncIterator()
            _ = try await monitor.execute("stop")
            #expect(try await monitor.execute("query-status")["status"]?.stringValue == "paused")
            _ = try await monitor.execute("cont")
            var names: [String] = []
            while names.count < 2, let event = await events.next() { names.append(event.name) }
            #expect(names == ["STOP", "RESUME"])
            await #expect(throws: QMPError.self) { try await monitor.execute("no-such-command") }
            await machine.stop()
            #expect(await machine.hasExited)
            #expect(await machine.exitStatus() == 0)
        } catch {
            Issue.record("\(error)")
            await machine.stop()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    @Test func test_machine_killedFromOutside_shouldReportExit() async throws {
        guard let (directory, machine) = try self.prepare() else { return }
        do {
            try await machine.start(stderrLog: directory + "/qemu.log")
            let pid = try #require(await machine.pid)
            kill(pid, SIGKILL)
            let status = await machine.exitStatus()
            #expect(status != 0)
            #expect(await machine.hasExited)
            // A dead machine's monitor fails cleanly instead of hanging.
            await #expect(throws: QMPError.self) {
                try await machine.monitor?.execute("query-status", timeout: .seconds(2))
            }
        } catch {
            Issue.record("\(error)")
        }
        await machine.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    @Test func test_machineLeftRunning_isReattachedByANewMachine_provenByItsPidFileAndSocket_andAnotherNameIsRefused()
        async throws
    {
        guard let (directory, first) = try self.prepare() else { return }
        var pid: Int32 = 0
        do {
            try await first.start(stderrLog: directory + "/qemu.log")
            pid = try #require(await first.pid)
            await first.detach()
            // A second QEMU of the same VM cannot start beside it: the pid file is locked.
            let twin = self.makeMachine(directory)
            await #expect(throws: (any Error).self) { try await twin.start(stderrLog: directory + "/twin.log") }
            #expect(QEMUProcessIdentity.isAlive(pid), "the first QEMU runs on")
            // Another VM's name at these paths is not taken for it.
            let impostor = self.makeMachine(directory, name: "other")
            await #expect(throws: QEMUProcessIdentity.Mismatch.self) { _ = try await impostor.reattach() }
            let again = self.makeMachine(directory)
            #expect(try await again.reattach())
            #expect(await again.isReattached)
            #expect(await again.pid == pid)
            let monitor = try #require(await again.monitor)
            #expect(try await monitor.execute("query-status")["status"]?.stringValue == "running")
            // Its exit is seen although it is not this process's child.
            kill(pid, SIGKILL)
            #expect(await again.exitStatus() == QEMUMachine.unknownExitStatus)
            // Once it is gone, its stale pid file finds nothing.
            #expect(try await !self.makeMachine(directory).reattach())
        } catch {
            Issue.record("\(error)")
        }
        if pid > 0 { kill(pid, SIGKILL) }
        await first.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }
}
