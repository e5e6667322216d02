import Foundation
import TOMLKit
import VNSnapCore
import VNSnapCrypto

extension PeerConfig {
    /// Longest path a unix socket address can hold (sun_path minus the terminator).
    static let maximumSocketPath = 107

    /// Reads, parses and validates the config at `path`, and loads its keyring.
    ///
    /// Relative paths in the file are relative to the file's directory.
    public static func load(path: String) throws(ConfigError) -> PeerConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(path: path, key: nil, message: "cannot read: \((error as NSError).localizedDescription)")
        }
        let base = (URL(fileURLWithPath: path).deletingLastPathComponent().path as NSString).standardizingPath
        return try self.parse(text, path: path, baseDirectory: base)
    }

    /// Parses and validates config text; `baseDirectory` anchors relative paths.
    public static func parse(_ text: String, path: String, baseDirectory: String) throws(ConfigError) -> PeerConfig {
        try TOMLPrecheck.check(text, path: path)
        let root: TOMLTable
        do {
            root = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigError(
                path: path,
                key: nil,
                message: "line \(error.source.begin.line), column \(error.source.begin.column): \(error.description)"
            )
        } catch {
            throw ConfigError(path: path, key: nil, message: "not valid TOML: \(error)")
        }
        func absolute(_ file: String) -> String {
            file.hasPrefix("/") ? file : ((base(baseDirectory) + "/" + file) as NSString).standardizingPath
        }

        var reader = TOMLReader(table: root, path: path, prefix: "")
        guard var peerTable = try reader.table("peer") else { throw reader.error("peer", "missing [peer] table") }
        let peer = try Self.parsePeer(&peerTable, absolute: absolute)
        guard var clusterTable = try reader.table("cluster") else {
            throw reader.error("cluster", "missing [cluster] table")
        }
        let clusterName = try clusterTable.requiredString("name")
        let keyringPath = absolute(try clusterTable.requiredString("keyring"))
        try clusterTable.rejectUnknownKeys()
        let keyring = try Self.loadKeyring(keyringPath, configPath: path)

        if reader.contains("peers") {
            throw reader.error(
                "peers",
                "the static [[peers]] list is gone: peers find each other by gossip; list one or more of them in "
                    + "[membership] seeds = [\"host:port\", ...] instead"
            )
        }
        var membershipTable = try reader.table("membership") ?? reader.emptyTable("membership")
        let membership = try Self.parseMembership(&membershipTable, peer: peer, absolute: absolute)

        var violins: [Violin] = []
        for var table in try reader.tables("violins") {
            let name = try table.requiredString("name")
            try Self.checkName(name, table, "name")
            guard let raw = try table.int("vni") else { throw table.error("vni", "missing (required)") }
            guard raw >= 1, let vni = VNI(UInt32(clamping: raw)) else {
                throw table.error("vni", "\(raw) is out of range 1...\(VNI.maximum)")
            }
            let mtu = try table.int("mtu")
            if let mtu, !(Violin.minimumMTU...Violin.maximumMTU).contains(mtu) {
                throw table.error("mtu", "\(mtu) is out of range \(Violin.minimumMTU)...\(Violin.maximumMTU)")
            }
            try table.rejectUnknownKeys()
            if violins.contains(where: { $0.name == name }) {
                throw table.error("name", "duplicate VIOLIN \"\(name)\"")
            }
            if let other = violins.first(where: { $0.vni == vni }) {
                throw table.error("vni", "\(raw) is already used by VIOLIN \"\(other.name)\"")
            }
            violins.append(Violin(name: name, vni: vni, mtu: mtu))
        }

        var vms: [VMDefinition] = []
        for var table in try reader.tables("vms") {
            let vm = try Self.parseVM(&table, violins: violins, absolute: absolute)
            if vms.contains(where: { $0.name == vm.name }) { throw table.error("name", "duplicate VM \"\(vm.name)\"") }
            // MACs need only be unique within a VIOLIN: VIOLINs are separate Ethernets.
            if let other = vms.first(where: { $0.mac == vm.mac && $0.violin == vm.violin }) {
                throw table.error("mac", "\(vm.mac) is already used by VM \"\(other.name)\" on VIOLIN \"\(vm.violin)\"")
            }
            vms.append(vm)
        }
        var schedules: [SnapshotSchedule] = []
        for var table in try reader.tables("schedules") {
            let schedule = try Self.parseSchedule(&table, violins: violins)
            if schedules.contains(where: { $0.name == schedule.name }) {
                throw table.error("name", "duplicate schedule \"\(schedule.name)\"")
            }
            schedules.append(schedule)
        }
        var metrics: HostPort?
        if var table = try reader.table("metrics") {
            let text = try table.string("address") ?? PeerConfigDefaults.metricsAddress
            guard let address = HostPort(text) else {
                throw table.error(
                    "address",
                    "\"\(text)\" is not host:port (e.g. \"\(PeerConfigDefaults.metricsAddress)\")"
                )
            }
            metrics = try table.bool("enabled") ?? true ? address : nil
            try table.rejectUnknownKeys()
        }
        try reader.rejectUnknownKeys()

        let config = PeerConfig(
            path: path,
            peer: peer,
            cluster: Cluster(name: clusterName, keyringPath: keyringPath),
            keyring: keyring,
            membership: membership,
            violins: violins,
            vms: vms,
            schedules: schedules,
            metrics: metrics
        )
        try config.checkSocketPaths()
        return config
    }

    private static func base(_ directory: String) -> String { directory.isEmpty ? "." : directory }

    private static func parsePeer(
        _ table: inout TOMLReader,
        absolute: (String) -> String
    ) throws(ConfigError) -> Peer {
        let name = try table.requiredString("name")
        try Self.checkName(name, table, "name")
        let bindText = try table.requiredString("bind")
        guard let bind = HostPort(bindText) else {
            throw table.error("bind", "\"\(bindText)\" is not host:port (e.g. \"10.0.0.1:7946\")")
        }
        let dataDirectory = absolute(try table.string("data_dir") ?? PeerConfigDefaults.dataDirectory)
        let controlSocket = absolute(try table.string("control_socket") ?? PeerConfigDefaults.controlSocket)
        var roles: Set<PeerRole> = [.vm]
        if let names = try table.stringArray("roles") {
            roles = []
            for (index, name) in names.enumerated() {
                guard let role = PeerRole(rawValue: name) else {
                    let valid = PeerRole.allCases.map(\.rawValue).joined(separator: ", ")
                    throw table.error("roles[\(index)]", "unknown role \"\(name)\" (valid: \(valid))")
                }
                roles.insert(role)
            }
        }
        let capacityMiB = try table.int("store_capacity_mib") ?? 0
        guard capacityMiB >= 0 else { throw table.error("store_capacity_mib", "\(capacityMiB) is negative") }
        if capacityMiB > 0, !roles.contains(.store) {
            throw table.error("store_capacity_mib", "only valid with the \"store\" role")
        }
        let keepVMs = try table.bool("keep_vms") ?? false
        let fenceAfter = try table.double("fence_after_s")
        if let fenceAfter, !(fenceAfter >= 1 && fenceAfter <= 3600) {
            throw table.error("fence_after_s", "\(fenceAfter) is not between 1 and 3600 seconds")
        }
        let readAheadMiB = try table.int("image_read_ahead_mib") ?? PeerConfig.Peer.defaultReadAheadMiB
        guard (0...1024).contains(readAheadMiB) else {
            throw table.error("image_read_ahead_mib", "\(readAheadMiB) is out of range 0...1024")
        }
        let yielding = try table.bool("image_low_priority") ?? false
        let batchKiB = try table.int("image_read_batch_kib") ?? 0
        guard (0...1024).contains(batchKiB) else {
            throw table.error("image_read_batch_kib", "\(batchKiB) is out of range 0...1024")
        }
        try table.rejectUnknownKeys()
        return Peer(
            name: name,
            bind: bind,
            dataDirectory: dataDirectory,
            controlSocket: controlSocket,
            roles: roles,
            storeCapacity: UInt64(capacityMiB) << 20,
            keepVMs: keepVMs,
            fenceAfter: fenceAfter.map { .milliseconds(Int($0 * 1000)) },
            imageReadAhead: readAheadMiB << 20,
            imageLowPriority: yielding,
            imageReadBatch: batchKiB << 10
        )
    }

    private static func parseMembership(
        _ table: inout TOMLReader,
        peer: Peer,
        absolute: (String) -> String
    ) throws(ConfigError) -> Membership {
        let bind: HostPort
        if let text = try table.string("bind") {
            guard let value = HostPort(text) else {
                throw table.error("bind", "\"\(text)\" is not host:port (e.g. \"10.0.0.1:7947\")")
            }
            bind = value
        } else {
            // Next to the tunnel port by default, as serf/memberlist users expect one well-known port pair.
            guard peer.bind.port != 0, peer.bind.port < 65535 else {
                throw table.error("bind", "missing: set it when peer.bind has port 0 or 65535")
            }
            bind = HostPort(host: peer.bind.host, port: peer.bind.port + 1)
        }
        if bind == peer.bind, bind.port != 0 {
            throw table.error("bind", "\(bind) is already peer.bind (the tunnel socket)")
        }
        let advertise: HostPort
        if let text = try table.string("advertise") {
            guard let value = HostPort(text), value.port != 0 else {
                throw table.error("advertise", "\"\(text)\" is not host:port with a port in 1...65535")
            }
            advertise = value
        } else {
            guard !Self.isUnspecified(bind.host), bind.port != 0 else {
                throw table.error(
                    "advertise",
                    "missing: other peers cannot reach \(bind); set the address they should use (host:port)"
                )
            }
            advertise = bind
        }
        var seeds: [HostPort] = []
        for (index, text) in (try table.stringArray("seeds") ?? []).enumerated() {
            guard let seed = HostPort(text), seed.port != 0 else {
                throw table.error("seeds[\(index)]", "\"\(text)\" is not host:port with a port in 1...65535")
            }
            if seed == advertise { continue }  // a peer may list itself in a cluster-wide seed list
            seeds.append(seed)
        }
        let probeMs = try table.int("probe_interval_ms") ?? 1000
        guard (50...60_000).contains(probeMs) else {
            throw table.error("probe_interval_ms", "\(probeMs) is out of range 50...60000")
        }
        let timeoutMs = try table.int("probe_timeout_ms") ?? probeMs / 2
        guard timeoutMs >= 10, timeoutMs < probeMs else {
            throw table.error("probe_timeout_ms", "\(timeoutMs) must be at least 10 and below probe_interval_ms")
        }
        let multiplier = try table.double("suspicion_multiplier") ?? 4
        guard (1...100).contains(multiplier) else {
            throw table.error("suspicion_multiplier", "\(multiplier) is out of range 1...100")
        }
        try table.rejectUnknownKeys()
        let tunnelHost = Self.isUnspecified(peer.bind.host) ? advertise.host : peer.bind.host
        return Membership(
            bind: bind,
            advertise: advertise,
            seeds: seeds,
            tunnelHost: tunnelHost,
            probeInterval: .milliseconds(probeMs),
            probeTimeout: .milliseconds(timeoutMs),
            suspicionMultiplier: multiplier,
            termFile: peer.dataDirectory + "/membership/term"
        )
    }

    private static func isUnspecified(_ host: String) -> Bool {
        host == "0.0.0.0" || host == "::" || host == "[::]"
    }

    private static func parseVM(
        _ table: inout TOMLReader,
        violins: [Violin],
        absolute: (String) -> String
    ) throws(ConfigError) -> VMDefinition {
        let name = try table.requiredString("name")
        try Self.checkName(name, table, "name")
        let violin = try Self.violinName(&table, violins: violins)
        let macText = try table.requiredString("mac")
        guard let mac = MACAddress(macText) else {
            throw table.error("mac", "\"\(macText)\" is not a MAC address (e.g. \"52:54:00:12:34:56\")")
        }
        guard !mac.isMulticast else { throw table.error("mac", "\(mac) is a multicast address; a NIC needs unicast") }
        let memory = try table.int("memory_mib") ?? 128
        guard (16...1_048_576).contains(memory) else {
            throw table.error("memory_mib", "\(memory) is out of range 16...1048576")
        }
        let vcpus = try table.int("vcpus") ?? 1
        guard (1...256).contains(vcpus) else { throw table.error("vcpus", "\(vcpus) is out of range 1...256") }

        let kernel = try table.string("kernel").map(absolute)
        let initrd = try table.string("initrd").map(absolute)
        let append = try table.string("append")
        let disk = try table.string("disk").map(absolute)
        let format = try table.string("disk_format")
        if format != nil, disk == nil { throw table.error("disk_format", "only valid with disk") }
        var attached: VMDefinition.Disk?
        if let disk {
            try Self.checkReadable(disk, table, "disk")
            let chosen = format ?? (disk.hasSuffix(".qcow2") ? "qcow2" : "raw")
            guard chosen == "qcow2" || chosen == "raw" else {
                throw table.error("disk_format", "\"\(chosen)\" is not one of qcow2, raw")
            }
            attached = VMDefinition.Disk(path: disk, format: chosen)
        }
        let boot: VMDefinition.Boot
        if let kernel {
            // Direct kernel boot; a disk, if set, is attached as the VM's disk.
            try Self.checkReadable(kernel, table, "kernel")
            if let initrd { try Self.checkReadable(initrd, table, "initrd") }
            boot = .kernel(kernel: kernel, initrd: initrd, append: append ?? "")
        } else if attached != nil {
            if initrd != nil { throw table.error("initrd", "only valid with kernel") }
            if append != nil { throw table.error("append", "only valid with kernel") }
            boot = .disk
        } else {
            throw table.error(nil, "set kernel (with initrd, append), disk, or both")
        }
        var accelerator: VMDefinition.Accelerator?
        if let accel = try table.string("accel") {
            guard let value = VMDefinition.Accelerator(rawValue: accel) else {
                throw table.error("accel", "\"\(accel)\" is not one of kvm, tcg")
            }
            accelerator = value
        }
        try table.rejectUnknownKeys()
        return VMDefinition(
            name: name,
            violin: violin,
            mac: mac,
            memoryMiB: memory,
            vcpus: vcpus,
            boot: boot,
            disk: attached,
            accelerator: accelerator,
            mtu: violins.first { $0.name == violin }?.mtu
        )
    }

    /// The table's `violin`, which must name one of `violins`.
    static func violinName(_ table: inout TOMLReader, violins: [Violin]) throws(ConfigError) -> String {
        let violin = try table.requiredString("violin")
        guard violins.contains(where: { $0.name == violin }) else {
            let known = violins.map(\.name).joined(separator: ", ")
            throw table.error("violin", "no VIOLIN \"\(violin)\" is defined (known: \(known.isEmpty ? "none" : known))")
        }
        return violin
    }

    static func checkName(_ name: String, _ table: TOMLReader, _ key: String) throws(ConfigError) {
        guard VMDefinition.isValidName(name) else {
            throw table.error(key, "\"\(name)\" must be 1-32 characters of A-Z a-z 0-9 . _ - (not starting with .)")
        }
    }

    private static func checkReadable(_ file: String, _ table: TOMLReader, _ key: String) throws(ConfigError) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw table.error(key, "\(file) does not exist or is not a file")
        }
        guard FileManager.default.isReadableFile(atPath: file) else {
            throw table.error(key, "\(file) is not readable")
        }
    }

    private static func loadKeyring(_ keyringPath: String, configPath: String) throws(ConfigError) -> Keyring {
        let text: String
        do {
            text = try String(contentsOfFile: keyringPath, encoding: .utf8)
        } catch {
            throw ConfigError(path: configPath, key: "cluster.keyring", message: "cannot read keyring \(keyringPath)")
        }
        do {
            return try Keyring.parse(text, path: keyringPath)
        } catch {
            throw ConfigError(path: configPath, key: "cluster.keyring", message: "\(error)")
        }
    }

    private func checkSocketPaths() throws(ConfigError) {
        var sockets: [(String, String)] = [("peer.control_socket", self.peer.controlSocket)]
        for (index, vm) in self.vms.enumerated() {
            sockets.append(("vms[\(index)]", self.switchPortSocket(vm.name)))
            sockets.append(("vms[\(index)]", self.vmDirectory(vm.name) + "/qmp.sock"))
        }
        for (key, socket) in sockets where socket.utf8.count > Self.maximumSocketPath {
            throw ConfigError(
                path: self.path,
                key: key == "peer.control_socket" ? key : "peer.data_dir",
                message: "socket path \(socket) is longer than \(Self.maximumSocketPath) bytes; choose a shorter path"
            )
        }
    }
}
