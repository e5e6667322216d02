import Testing
import VNSnapCore
import VNSnapHypervisor

@Suite struct QMPMessageTests {
    private func decode(_ text: String) throws(QMPError) -> QMPMessage {
        try QMPMessage.decode(line: Array(text.utf8))
    }

    @Test func test_decode_greeting_shouldBeGreeting() throws {
        let message = try self.decode(
            #"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}"#
        )
        guard case .greeting(let value) = message else { Issue.record("expected greeting, got \(message)"); return }
        #expect(value["version"]?["qemu"]?["major"]?.intValue == 7)
    }

    @Test func test_decode_returnWithID_shouldBeSuccess() throws {
        #expect(
            try self.decode(#"{"return": {"status": "running", "running": true}, "id": 3}"#)
                == .success(id: 3, ["status": "running", "running": true])
        )
        #expect(try self.decode(#"{"return": {}, "id": 1}"#) == .success(id: 1, .object([:])))
    }

    @Test func test_decode_error_shouldCarryClassAndDescription() throws {
        #expect(
            try self.decode(
                #"{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": 4}"#
            )
                == .failure(id: 4, errorClass: "CommandNotFound", description: "The command nope has not been found")
        )
    }

    @Test func test_decode_event_shouldCarryNameDataAndMicroseconds() throws {
        let message = try self.decode(
            #"{"timestamp": {"seconds": 1700000000, "microseconds": 123456}, "event": "STOP"}"#
        )
        #expect(message == .event(QMPEvent(name: "STOP", data: .null, timestampMicroseconds: 1_700_000_000_123_456)))
    }

    @Test func test_decode_numbersOutOfRange_shouldBeRefusedOrIgnoredNotTrap() throws {
        // Fuzzing found both: a timestamp whose microseconds overflow Int64, and Int(1e300).
        #expect(throws: QMPError(.malformedReply, "")) {
            try self.decode(#"{"event": "STOP", "timestamp": {"seconds": 9223372036854775, "microseconds": 1}}"#)
        }
        #expect(throws: QMPError(.malformedReply, "")) {
            try self.decode(#"{"event": "STOP", "timestamp": {"seconds": 1e300, "microseconds": 1}}"#)
        }
        #expect(try self.decode(#"{"return": {}, "id": 1e300}"#) == .success(id: nil, .object([:])))
    }

    @Test func test_decode_notJSONOrUnknownShape_shouldThrowMalformedReply() {
        for line in ["", "{", "not json", #"{"neither": 1}"#, "[1,2]"] {
            #expect(throws: QMPError(.malformedReply, "")) { try self.decode(line) }
        }
    }
}

@Suite struct QEMUCommandLineTests {
    let paths = QEMUPaths(vmDirectory: "/d/vms/a", switchPortSocket: "/d/ports/a.sock")

    @Test func test_arguments_kernelBoot_shouldWireNICToSwitchPortAndQMP() {
        let vm = VMDefinition(
            name: "a",
            violin: "v",
            mac: MACAddress("52:54:00:00:00:01")!,
            memoryMiB: 256,
            vcpus: 2,
            boot: .kernel(kernel: "/k", initrd: "/i", append: "console=ttyS0"),
            accelerator: .tcg
        )
        let args = QEMUCommandLine.arguments(for: vm, accelerator: .tcg, paths: self.paths)
        let joined = args.joined(separator: " ")
        #expect(joined.contains("-accel tcg"))
        #expect(joined.contains("-m 256"))
        #expect(joined.contains("-smp 2"))
        #expect(joined.contains("-kernel /k -initrd /i -append console=ttyS0"))
        #expect(joined.contains("-qmp unix:/d/vms/a/qmp.sock,server=on,wait=off"))
        #expect(joined.contains("-serial file:/d/vms/a/serial.log"))
        #expect(joined.contains("-pidfile /d/vms/a/qemu.pid"), "found again after the peer restarts")
        #expect(joined.contains("local.path=/d/vms/a/nic.sock,remote.type=unix,remote.path=/d/ports/a.sock"))
        #expect(joined.contains("mac=52:54:00:00:00:01"))
        #expect(joined.contains("-name a,process=vnsnap-a,debug-threads=on"), "vCPU threads named for top -H and perf")
        #expect(!args.contains("-S"))
    }

    @Test func test_arguments_diskBootPaused_shouldAttachDriveAndStartStopped() {
        let vm = VMDefinition(
            name: "b",
            violin: "v",
            mac: MACAddress("52:54:00:00:00:02")!,
            memoryMiB: 128,
            vcpus: 1,
            boot: .disk,
            disk: VMDefinition.Disk(path: "/img.qcow2", format: "qcow2"),
            accelerator: nil
        )
        let args = QEMUCommandLine.arguments(for: vm, accelerator: .kvm, paths: self.paths, startPaused: true)
        #expect(args.contains("file=/img.qcow2,format=qcow2,if=virtio,cache=writeback,id=disk0"))
        #expect(!args.contains("-kernel"))
        #expect(args.contains("-S"))
        #expect(args.joined(separator: " ").contains("-accel kvm -cpu host"))
    }
}
