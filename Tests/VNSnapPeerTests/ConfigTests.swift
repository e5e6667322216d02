import Foundation
import Testing
import VNSnapCore
import VNSnapCrypto
import VNSnapHypervisor
import VNSnapPeer

/// A temporary directory with a keyring and dummy guest files, removed when the test ends.
final class ConfigSandbox {
    let directory: String
    let key = SecretKey.generate()

    init() throws {
        self.directory = NSTemporaryDirectory() + "vnsnap-config-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        try (self.key.base64 + "\n").write(toFile: self.directory + "/keyring", atomically: true, encoding: .utf8)
        for file in ["vmlinuz", "initrd.img", "disk.qcow2"] {
            try "x".write(toFile: self.directory + "/" + file, atomically: true, encoding: .utf8)
        }
    }

    deinit {
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    func load(_ text: String) throws(ConfigError) -> PeerConfig {
        try PeerConfig.parse(text, path: "\(self.directory)/peer.toml", baseDirectory: self.directory)
    }
}

@Suite struct ConfigTests {
    static let valid = """
        [peer]
        name = "h1"
        bind = "127.0.0.1:7946"
        data_dir = "data"

        [cluster]
        name = "demo"
        keyring = "keyring"

        [membership]
        seeds = ["127.0.0.2:7947", "127.0.0.1:7947"]
        probe_interval_ms = 500

        [[violins]]
        name = "net"
        vni = 42

        [[vms]]
        name = "a"
        violin = "net"
        mac = "52:54:00:00:00:01"
        kernel = "vmlinuz"
        initrd = "initrd.img"
        append = "console=ttyS0"
        accel = "tcg"

        [[vms]]
        name = "b"
        violin = "net"
        mac = "52:54:00:00:00:02"
        disk = "disk.qcow2"
        memory_mib = 256
        vcpus = 2
        """

    @Test func test_parse_validConfig_shouldResolvePathsAndDefaults() throws {
        let sandbox = try ConfigSandbox()
        let config = try sandbox.load(Self.valid)
        #expect(config.peer.name == "h1")
        #expect(config.peer.bind == HostPort(host: "127.0.0.1", port: 7946))
        #expect(config.peer.dataDirectory == sandbox.directory + "/data")
        #expect(config.peer.controlSocket == PeerConfigDefaults.controlSocket)
        #expect(config.peer.roles == [.vm])
        #expect(config.keyring.primary == sandbox.key)
        #expect(config.membership.bind == HostPort(host: "127.0.0.1", port: 7947))
        #expect(config.membership.advertise == config.membership.bind)
        // A peer listed in its own seed list skips itself.
        #expect(config.membership.seeds == [HostPort(host: "127.0.0.2", port: 7947)])
        #expect(config.membership.probeInterval == .milliseconds(500))
        #expect(config.membership.probeTimeout == .milliseconds(250))
        #expect(config.membership.suspicionMultiplier == 4)
        #expect(config.membership.termFile == sandbox.directory + "/data/membership/term")
        #expect(config.violins == [Violin(name: "net", vni: VNI(42)!)])
        #expect(config.vms.count == 2)
        #expect(
            config.vms[0].boot
                == .kernel(
                    kernel: sandbox.directory + "/vmlinuz",
                    initrd: sandbox.directory + "/initrd.img",
                    append: "console=ttyS0"
                )
        )
        #expect(config.vms[0].accelerator == .tcg)
        #expect(config.vms[0].memoryMiB == 128)
        #expect(config.vms[1].boot == .disk)
        #expect(config.vms[1].disk == VMDefinition.Disk(path: sandbox.directory + "/disk.qcow2", format: "qcow2"))
        #expect(config.vms[1].accelerator == nil)
        #expect(config.vms[1].vcpus == 2)
    }

    @Test func test_parse_kernelWithDisk_shouldBootTheKernelWithTheDiskAttached() throws {
        let sandbox = try ConfigSandbox()
        let text = Self.valid.replacingOccurrences(
            of: "kernel = \"vmlinuz\"",
            with: "kernel = \"vmlinuz\"\ndisk = \"disk.qcow2\""
        )
        let config = try sandbox.load(text)
        guard case .kernel = config.vms[0].boot else {
            Issue.record("expected a kernel boot, got \(config.vms[0].boot)")
            return
        }
        #expect(config.vms[0].disk == VMDefinition.Disk(path: sandbox.directory + "/disk.qcow2", format: "qcow2"))
    }

    @Test func test_parse_violinMTU_shouldBeAnnouncedByEveryVMOnIt() throws {
        let sandbox = try ConfigSandbox()
        let config = try sandbox.load(Self.valid.replacingOccurrences(of: "vni = 42", with: "vni = 42\nmtu = 1280"))
        #expect(config.violins.first?.mtu == 1280)
        #expect(config.vms.allSatisfy { $0.mtu == 1280 })
        let args = QEMUCommandLine.arguments(
            for: config.vms[0],
            accelerator: .tcg,
            paths: QEMUPaths(vmDirectory: "/d", switchPortSocket: "/s")
        )
        #expect(args.contains { $0.hasPrefix("virtio-net-pci,") && $0.hasSuffix(",host_mtu=1280") })
        #expect(try sandbox.load(Self.valid).vms.allSatisfy { $0.mtu == nil })
    }

    @Test func test_load_checkedInExample_shouldParseExceptForMissingGuestFiles() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let sandbox = try ConfigSandbox()
        var text = try String(contentsOfFile: root + "/Fixtures/configs/example.toml", encoding: .utf8)
        text = text.replacingOccurrences(of: "/var/lib/vnsnap-peer/guest/", with: "")
        let config = try sandbox.load(text)
        #expect(config.vms.map(\.name) == ["source"])
        #expect(config.peer.controlSocket == "/run/vnsnap-peer/h1.sock")
        #expect(config.schedules.map(\.name) == ["hourly"])
        #expect(config.schedules.first?.retention == SnapshotRetention(keepLast: 24, keepDaily: 7))
    }

    static let schedule = """

        [[schedules]]
        name = "hourly"
        violin = "net"
        every = "1h"
        """

    @Test func test_parse_schedules_defaultsAndEveryKey() throws {
        let sandbox = try ConfigSandbox()
        let plain = try sandbox.load(Self.valid + Self.schedule)
        #expect(
            plain.schedules == [
                SnapshotSchedule(
                    name: "hourly",
                    violin: "net",
                    everySeconds: 3600,
                    mode: .cow,
                    target: .disk,
                    retention: SnapshotRetention(keepLast: 24)
                )
            ]
        )
        let full = try sandbox.load(
            Self.valid + Self.schedule
                + "\nmode = \"precopy\"\ntarget = \"memory\"\nreplicas = 3\nkeep_hourly = 6\nkeep_daily = 7\n"
        )
        #expect(full.schedules.first?.mode == .precopy)
        #expect(full.schedules.first?.target == SnapshotTarget(kind: .memory, replicas: 3))
        #expect(full.schedules.first?.retention == SnapshotRetention(keepHourly: 6, keepDaily: 7))
        #expect(try sandbox.load(Self.valid).schedules.isEmpty)
    }

    @Test(arguments: [
        ("every = \"1h\"", "every = \"hourly\"", "schedules[0].every"),
        ("every = \"1h\"", "every = \"5s\"", "schedules[0].every"),
        ("every = \"1h\"", "every = 3600", "schedules[0].every"),
        ("violin = \"net\"\nevery", "violin = \"nope\"\nevery", "schedules[0].violin"),
        ("name = \"hourly\"", "name = \"hour@ly\"", "schedules[0].name"),
        ("every = \"1h\"", "every = \"1h\"\nmode = \"fast\"", "schedules[0].mode"),
        ("every = \"1h\"", "every = \"1h\"\ntarget = \"tape\"", "schedules[0].target"),
        ("every = \"1h\"", "every = \"1h\"\nreplicas = 2", "schedules[0].replicas"),
        ("every = \"1h\"", "every = \"1h\"\ntarget = \"memory\"\nreplicas = 0", "schedules[0].replicas"),
        ("every = \"1h\"", "every = \"1h\"\nkeep_last = -1", "schedules[0].keep_last"),
        ("every = \"1h\"", "every = \"1h\"\nkeep_last = 0\nkeep_daily = 0", "schedules[0]"),
        ("every = \"1h\"", "every = \"1h\"\nkeep_weekly = 4", "schedules[0].keep_weekly"),
    ])
    func test_parse_brokenSchedule_shouldThrowNamingTheKey(original: String, replacement: String, key: String) throws {
        let sandbox = try ConfigSandbox()
        let text = (Self.valid + Self.schedule).replacingOccurrences(of: original, with: replacement)
        #expect(text != Self.valid + Self.schedule, "fixture does not contain \(original)")
        #expect(throws: ConfigError.self) { try sandbox.load(text) }
        do {
            _ = try sandbox.load(text)
        } catch {
            #expect(error.key == key, "\(error)")
        }
        // Two schedules of one name.
        #expect(throws: ConfigError.self) { try sandbox.load(Self.valid + Self.schedule + Self.schedule) }
    }

    @Test func test_parse_metrics_offByDefault_onWithTheTable_loopbackUnlessAddressed() throws {
        let sandbox = try ConfigSandbox()
        #expect(try sandbox.load(Self.valid).metrics == nil)
        #expect(try sandbox.load(Self.valid + "\n[metrics]\n").metrics == HostPort(host: "127.0.0.1", port: 9464))
        #expect(
            try sandbox.load(Self.valid + "\n[metrics]\naddress = \"0.0.0.0:9100\"\n").metrics
                == HostPort(host: "0.0.0.0", port: 9100)
        )
        #expect(try sandbox.load(Self.valid + "\n[metrics]\nenabled = false\n").metrics == nil)
        for (text, key) in [
            ("address = \"nowhere\"", "metrics.address"), ("enabled = \"yes\"", "metrics.enabled"),
            ("port = 9100", "metrics.port"),
        ] {
            do {
                _ = try sandbox.load(Self.valid + "\n[metrics]\n\(text)\n")
                Issue.record("expected an error for \(key)")
            } catch {
                #expect(error.key == key, "\(error)")
            }
        }
    }

    /// Each broken config names the key and the problem.
    @Test(arguments: [
        ("name = \"h1\"", "name = \"h 1\"", "peer.name"),
        ("bind = \"127.0.0.1:7946\"", "bind = \"127.0.0.1\"", "peer.bind"),
        ("bind = \"127.0.0.1:7946\"", "bind = 7946", "peer.bind"),
        ("keyring = \"keyring\"", "keyring = \"missing\"", "cluster.keyring"),
        ("seeds = [\"127.0.0.2:7947\"", "seeds = [\"127.0.0.2\"", "membership.seeds[0]"),
        ("probe_interval_ms = 500", "probe_interval_ms = 5", "membership.probe_interval_ms"),
        ("probe_interval_ms = 500", "probe_interval_ms = 500\nprobe_timeout_ms = 900", "membership.probe_timeout_ms"),
        ("probe_interval_ms = 500", "probe_interval_ms = 500\nbind = \"127.0.0.1:7946\"", "membership.bind"),
        ("probe_interval_ms = 500", "probe_interval_ms = 500\nbind = \"0.0.0.0:7947\"", "membership.advertise"),
        (
            "probe_interval_ms = 500", "probe_interval_ms = 500\nsuspicion_multiplier = \"x\"",
            "membership.suspicion_multiplier"
        ),
        ("probe_interval_ms = 500", "probe_interval_ms = 500\nfanout = 3", "membership.fanout"),
        ("[membership]", "[[peers]]\nname = \"h2\"\naddress = \"127.0.0.2:7946\"\n\n[membership]", "peers"),
        ("data_dir = \"data\"", "data_dir = \"data\"\nstore_capacity_mib = 64", "peer.store_capacity_mib"),
        ("data_dir = \"data\"", "data_dir = \"data\"\nimage_read_ahead_mib = 2000", "peer.image_read_ahead_mib"),
        ("data_dir = \"data\"", "data_dir = \"data\"\nimage_low_priority = \"yes\"", "peer.image_low_priority"),
        ("data_dir = \"data\"", "data_dir = \"data\"\nimage_read_batch_kib = 4096", "peer.image_read_batch_kib"),
        ("vni = 42", "vni = 0", "violins[0].vni"),
        ("vni = 42", "vni = 16777216", "violins[0].vni"),
        ("vni = 42", "vni = 42\nmtu = 100", "violins[0].mtu"),
        ("vni = 42", "vni = 42\nmtu = 9001", "violins[0].mtu"),
        (
            "violin = \"net\"\nmac = \"52:54:00:00:00:01\"", "violin = \"nope\"\nmac = \"52:54:00:00:00:01\"",
            "vms[0].violin"
        ),
        ("mac = \"52:54:00:00:00:01\"", "mac = \"52:54:00:00:00\"", "vms[0].mac"),
        ("mac = \"52:54:00:00:00:01\"", "mac = \"01:00:5e:00:00:01\"", "vms[0].mac"),
        ("mac = \"52:54:00:00:00:02\"", "mac = \"52:54:00:00:00:01\"", "vms[1].mac"),
        ("kernel = \"vmlinuz\"", "kernel = \"nope\"", "vms[0].kernel"),
        ("accel = \"tcg\"", "accel = \"xen\"", "vms[0].accel"),
        ("memory_mib = 256", "memory_mib = 1", "vms[1].memory_mib"),
        ("vcpus = 2", "vcpus = 0", "vms[1].vcpus"),
        ("disk = \"disk.qcow2\"", "disk = \"disk.qcow2\"\nappend = \"console=ttyS0\"", "vms[1].append"),
        ("disk = \"disk.qcow2\"", "disk = \"disk.qcow2\"\ndisk_format = \"vmdk\"", "vms[1].disk_format"),
        ("disk = \"disk.qcow2\"", "disk = \"nope.qcow2\"", "vms[1].disk"),
        ("kernel = \"vmlinuz\"", "kernel = \"vmlinuz\"\ndisk_format = \"raw\"", "vms[0].disk_format"),
        ("vcpus = 2", "vcpus = 2\ncolour = \"red\"", "vms[1].colour"),
        ("data_dir = \"data\"", "data_dir = \"data\"\nroles = [\"vm\", \"boss\"]", "peer.roles[1]"),
        ("[cluster]\nname = \"demo\"", "[cluster]\nname = \"\"", "cluster.name"),
    ])
    func test_parse_brokenKey_shouldThrowNamingTheKey(original: String, replacement: String, key: String) throws {
        let sandbox = try ConfigSandbox()
        #expect(Self.valid.contains(original), "fixture does not contain \(original)")
        let text = Self.valid.replacingOccurrences(of: original, with: replacement)
        do {
            _ = try sandbox.load(text)
            Issue.record("expected an error for \(key)")
        } catch {
            #expect(error.key == key, "\(error)")
            #expect(error.path.hasSuffix("peer.toml"))
        }
    }

    @Test func test_parse_notTOML_shouldNameLine() throws {
        let sandbox = try ConfigSandbox()
        do {
            _ = try sandbox.load("[peer]\nname = \n")
            Issue.record("expected a parse error")
        } catch {
            #expect(error.key == nil)
            #expect(error.message.contains("line 2"), "\(error)")
        }
    }

    @Test func test_parse_tableHeaderWithoutAKey_shouldBeAConfigErrorNotAnAbort() throws {
        // Fuzzing found it: TOMLKit's parser aborts the process on `[/x]` (TOMLPrecheckTests has the cases).
        let sandbox = try ConfigSandbox()
        #expect(throws: ConfigError.self) { try sandbox.load("[/peer]\nname = \"h1\"\n") }
    }

    @Test func test_parse_missingPeerTable_shouldSaySo() throws {
        let sandbox = try ConfigSandbox()
        #expect(throws: ConfigError.self) { try sandbox.load("[cluster]\nname = \"x\"\nkeyring = \"keyring\"\n") }
    }

    @Test func test_parse_keyringWithGarbage_shouldNameKeyringLine() throws {
        let sandbox = try ConfigSandbox()
        try "\(sandbox.key.base64)\nnonsense\n".write(
            toFile: sandbox.directory + "/keyring",
            atomically: true,
            encoding: .utf8
        )
        do {
            _ = try sandbox.load(Self.valid)
            Issue.record("expected a keyring error")
        } catch {
            #expect(error.key == "cluster.keyring")
            #expect(error.message.contains("keyring:2"), "\(error)")
        }
    }

    @Test func test_load_unreadableFile_shouldNameFile() {
        #expect(throws: ConfigError.self) { try PeerConfig.load(path: "/nonexistent/peer.toml") }
    }

    @Test func test_hostPort_parsing() {
        #expect(HostPort("10.0.0.1:7946") == HostPort(host: "10.0.0.1", port: 7946))
        #expect(HostPort("[::1]:7946") == HostPort(host: "::1", port: 7946))
        #expect(HostPort("[::1]:7946")?.description == "[::1]:7946")
        #expect(HostPort("10.0.0.1") == nil)
        #expect(HostPort("10.0.0.1:70000") == nil)
        #expect(HostPort(":7946") == nil)
    }
}
