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

        var peers: [StaticPeer] = []
        for var table in try reader.tables("peers") {
            let name = try table.requiredString("name")
            try Self.checkName(name, table, "name")
            let addressText = try table.requiredString("address")
            guard let address = HostPort(addressText), address.port != 0 else {
                throw table.error("address", "\"\(addressText)\" is not host:port with a port in 1...65535")
            }
            try table.rejectUnknownKeys()
            if name == peer.name { throw table.error("name", "\"\(name)\" is this peer itself ([peer].name)") }
            if peers.contains(where: { $0.name == name }) { throw table.error("name", "duplicate peer \"\(name)\"") }
            if PeerID(name: name) == peer.id || peers.contains(where: { $0.id == PeerID(name: name) }) {
                throw table.error("name", "\"\(name)\" hashes to the same peer id as another peer; rename it")
            }
            peers.append(StaticPeer(name: name, address: address))
        }

        var violins: [Violin] = []
        for var table in try reader.tables("violins") {
            let name = try table.requiredString("name")
            try Self.checkName(name, table, "name")
            guard let raw = try table.int("vni") else { throw table.error("vni", "missing (required)") }
            guard raw >= 1, let vni = VNI(UInt32(clamping: raw)) else {
                throw table.error("vni", "\(raw) is out of range 1...\(VNI.maximum)")
            }
            try table.rejectUnknownKeys()
            if violins.contains(where: { $0.name == name }) {
                throw table.error("name", "duplicate VIOLIN \"\(name)\"")
            }
            if let other = violins.first(where: { $0.vni == vni }) {
                throw table.error("vni", "\(raw) is already used by VIOLIN \"\(other.name)\"")
            }
            violins.append(Violin(name: name, vni: vni))
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
        try reader.rejectUnknownKeys()

        let config = PeerConfig(
            path: path,
            peer: peer,
            cluster: Cluster(name: clusterName, keyringPath: keyringPath),
            keyring: keyring,
            peers: peers,
            violins: violins,
            vms: vms
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
        try table.rejectUnknownKeys()
        return Peer(name: name, bind: bind, dataDirectory: dataDirectory, controlSocket: controlSocket, roles: roles)
    }

    private static func parseVM(
        _ table: inout TOMLReader,
        violins: [Violin],
        absolute: (String) -> String
    ) throws(ConfigError) -> VMDefinition {
        let name = try table.requiredString("name")
        try Self.checkName(name, table, "name")
        let violin = try table.requiredString("violin")
        guard violins.contains(where: { $0.name == violin }) else {
            let known = violins.map(\.name).joined(separator: ", ")
            throw table.error("violin", "no VIOLIN \"\(violin)\" is defined (known: \(known.isEmpty ? "none" : known))")
        }
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
        let boot: VMDefinition.Boot
        switch (kernel, disk) {
        case (.some(let kernel), .none):
            try Self.checkReadable(kernel, table, "kernel")
            if let initrd { try Self.checkReadable(initrd, table, "initrd") }
            if format != nil { throw table.error("disk_format", "only valid with disk") }
            boot = .kernel(kernel: kernel, initrd: initrd, append: append ?? "")
        case (.none, .some(let disk)):
            try Self.checkReadable(disk, table, "disk")
            if initrd != nil { throw table.error("initrd", "only valid with kernel") }
            if append != nil { throw table.error("append", "only valid with kernel") }
            let chosen = format ?? (disk.hasSuffix(".qcow2") ? "qcow2" : "raw")
            guard chosen == "qcow2" || chosen == "raw" else {
                throw table.error("disk_format", "\"\(chosen)\" is not one of qcow2, raw")
            }
            boot = .disk(path: disk, format: chosen)
        case (.some, .some):
            throw table.error(nil, "set either kernel (with initrd, append) or disk, not both")
        case (.none, .none):
            throw table.error(nil, "set kernel (with initrd, append) or disk")
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
            accelerator: accelerator
        )
    }

    private static func checkName(_ name: String, _ table: TOMLReader, _ key: String) throws(ConfigError) {
        let allowed = name.unicodeScalars.allSatisfy {
            (("a"..."z").contains($0) || ("A"..."Z").contains($0)
                || ("0"..."9").contains($0) || $0 == "-" || $0 == "_" || $0 == ".")
        }
        guard allowed, name.count <= 32, !name.hasPrefix(".") else {
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
