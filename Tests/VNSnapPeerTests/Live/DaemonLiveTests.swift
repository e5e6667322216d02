import Foundation
import Testing
import VNSnapCore
import VNSnapCrypto
import VNSnapPeer

/// The `vnsnap-peer` binary as an operator runs it: refusals, help, supervision, shutdown.
@Suite(.serialized) struct DaemonLiveTests {
    struct Outcome {
        var status: Int32
        var output: String
    }

    /// Runs the peer binary to completion with a time limit.
    static func runBinary(_ arguments: [String], timeout: Duration = .seconds(30)) async throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: LiveEnvironment.peerBinary)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        return Outcome(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self))
    }

    @Test func test_run_brokenConfig_shouldExitNonZeroNamingFileAndKey() async throws {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let directory = "/tmp/vnsnap-cli-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "AAAA\n".write(toFile: directory + "/badkeyring", atomically: true, encoding: .utf8)
        let config = """
            [peer]
            name = "h1"
            bind = "127.0.0.1:0"
            data_dir = "\(directory)/data"
            [cluster]
            name = "c"
            keyring = "badkeyring"
            """
        try config.write(toFile: directory + "/peer.toml", atomically: true, encoding: .utf8)
        let badKeyring = try await Self.runBinary(["run", "--config", directory + "/peer.toml"])
        #expect(badKeyring.status == 1)
        #expect(badKeyring.output.contains("\(directory)/peer.toml: cluster.keyring:"), "\(badKeyring.output)")
        #expect(badKeyring.output.contains("badkeyring:1"), "\(badKeyring.output)")
        // Nothing was started: no data directory, no control socket.
        #expect(!FileManager.default.fileExists(atPath: directory + "/data"))

        try
            (config.replacingOccurrences(of: "bind = \"127.0.0.1:0\"", with: "bind = \"nowhere\"")
            .replacingOccurrences(of: "badkeyring", with: "badkeyring"))
            .write(toFile: directory + "/peer.toml", atomically: true, encoding: .utf8)
        let badBind = try await Self.runBinary(["run", "--config", directory + "/peer.toml"])
        #expect(badBind.status == 1)
        #expect(badBind.output.contains("peer.bind"), "\(badBind.output)")

        let missing = try await Self.runBinary(["run", "--config", directory + "/nope.toml"])
        #expect(missing.status == 1)
        #expect(missing.output.contains("nope.toml: cannot read"), "\(missing.output)")
    }

    @Test func test_run_corruptTermFile_shouldExitNonZeroNamingIt_andLeaveItUntouched() async throws {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let directory = "/tmp/vnsnap-cli-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(
            atPath: directory + "/data/membership",
            withIntermediateDirectories: true
        )
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "\(SecretKey.generate().base64)\n".write(toFile: directory + "/keyring", atomically: true, encoding: .utf8)
        try "vnsnap-peer term v1\nseven\n".write(
            toFile: directory + "/data/membership/term",
            atomically: true,
            encoding: .utf8
        )
        try """
        [peer]
        name = "h1"
        bind = "127.0.0.1:0"
        data_dir = "\(directory)/data"
        control_socket = "\(directory)/control.sock"
        [cluster]
        name = "c"
        keyring = "keyring"
        [membership]
        bind = "127.0.0.1:0"
        advertise = "127.0.0.1:7947"
        """.write(toFile: directory + "/peer.toml", atomically: true, encoding: .utf8)
        let outcome = try await Self.runBinary(["run", "--config", directory + "/peer.toml"])
        #expect(outcome.status == 1)
        #expect(outcome.output.contains("\(directory)/data/membership/term"), "\(outcome.output)")
        #expect(outcome.output.contains("refusing to start"), "\(outcome.output)")
        #expect(
            try String(contentsOfFile: directory + "/data/membership/term", encoding: .utf8)
                == "vnsnap-peer term v1\nseven\n"
        )
        #expect(!FileManager.default.fileExists(atPath: directory + "/control.sock"))
    }

    @Test func test_status_withoutPeer_shouldExitNonZeroWithHint() async throws {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let outcome = try await Self.runBinary(["status", "--socket", "/tmp/vnsnap-no-such.sock"])
        #expect(outcome.status == 1)
        #expect(outcome.output.contains("/tmp/vnsnap-no-such.sock"), "\(outcome.output)")
        #expect(outcome.output.contains("is `vnsnap-peer run` running?"), "\(outcome.output)")
    }

    @Test func test_help_shouldDocumentEveryFlag() async throws {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let top = try await Self.runBinary(["--help"])
        for word in ["run", "status", "leave", "keys", "keygen"] { #expect(top.output.contains(word), "\(top.output)") }
        let run = try await Self.runBinary(["help", "run"])
        for flag in ["--config", "--log-level", "--qemu"] { #expect(run.output.contains(flag), "\(run.output)") }
        let status = try await Self.runBinary(["help", "status"])
        for flag in ["--socket", "--config", "--json", "--watch", "--interval"] {
            #expect(status.output.contains(flag), "\(status.output)")
        }
        let keys = try await Self.runBinary(["help", "keys"])
        for word in ["list", "install", "use", "remove"] { #expect(keys.output.contains(word), "\(keys.output)") }
    }

    @Test func test_vmKilledFromOutside_shouldShowExited_andSIGTERMLeavesNoQEMU() async throws {
        if let missing = LiveEnvironment.missing { Issue.record("live tier cannot run: \(missing)"); return }
        let cluster = try LiveCluster(hosts: ["h1"])
        do {
            let config =
                cluster.baseConfig("h1") + "\n[[violins]]\nname = \"v\"\nvni = 7\n"
                + LiveCluster.guestVM(
                    name: "victim",
                    violin: "v",
                    mac: "52:54:00:00:00:10",
                    append: "vnsnap.role=counter vnsnap.interval=500"
                )
                + LiveCluster.guestVM(
                    name: "survivor",
                    violin: "v",
                    mac: "52:54:00:00:00:11",
                    append: "vnsnap.role=counter vnsnap.interval=500"
                )
            try cluster.startPeer("h1", config: config)
            _ = try await cluster.waitForSerial(
                host: "h1",
                vm: "victim",
                containing: "VNSNAP counter",
                timeout: .seconds(60)
            )
            var status = try await cluster.status("h1")
            let victim = try #require(status.vms.first { $0.name == "victim" }?.pid)
            let survivor = try #require(status.vms.first { $0.name == "survivor" }?.pid)
            kill(victim, SIGKILL)
            var exited = false
            for _ in 0..<50 where !exited {
                try await Task.sleep(for: .milliseconds(100))
                status = try await cluster.status("h1")
                exited = status.vms.first { $0.name == "victim" }?.state == "exited"
            }
            #expect(exited, "\(status.vms)")
            #expect(status.vms.first { $0.name == "survivor" }?.state == "running")
            #expect(status.vms.first { $0.name == "survivor" }?.runState == "running")

            // SIGTERM: the peer quits its VMs over QMP and exits 0.
            let peer = try #require(cluster.host("h1").peerPID)
            kill(peer, SIGTERM)
            var peerGone = false
            for _ in 0..<150 where !peerGone {
                try await Task.sleep(for: .milliseconds(100))
                peerGone = kill(peer, 0) != 0 || LiveCluster.isZombie(peer)
            }
            #expect(peerGone)
            #expect(kill(survivor, 0) != 0 || LiveCluster.isZombie(survivor), "QEMU \(survivor) outlived its peer")
            #expect(!FileManager.default.fileExists(atPath: cluster.controlSocket("h1")))
        } catch {
            Issue.record("\(error)")
        }
        await cluster.teardown()
    }
}
