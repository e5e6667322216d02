import Foundation
import Testing
import VNSnapCrypto
import VNSnapPeer

/// Several "hosts" on this machine: network namespaces on one bridge, each running a real
/// `vnsnap-peer run` process with real QEMU guests. Everything it starts is stopped by process id in
/// `teardown`, which tests call on every path.
final class LiveCluster: @unchecked Sendable {
    struct Host {
        var name: String
        var namespace: String
        var address: String
        var directory: String
        var peerPID: Int32?
    }

    /// Short, unique per cluster, so parallel or leftover runs never collide. Prefix `vnt` marks ours.
    let tag: String
    let root: String
    let keyring: Keyring
    private(set) var hosts: [String: Host] = [:]
    private var order: [String] = []
    private var peerNames: [String] = []
    private let bridgeNamespace: String
    private let subnet: Int

    /// `hosts` run peers and know each other; `bystanders` are namespaces on the same wire without a peer.
    init(hosts names: [String], bystanders: [String] = []) throws {
        self.peerNames = names
        self.tag = "vnt" + String(UUID().uuidString.prefix(5)).lowercased()
        self.root = "/tmp/\(self.tag)"
        self.keyring = Keyring(keys: [SecretKey.generate()])!
        self.bridgeNamespace = "\(self.tag)-br"
        self.subnet = Int.random(in: 10...250)
        try FileManager.default.createDirectory(atPath: self.root, withIntermediateDirectories: true)
        try self.keyring.fileText.write(toFile: self.root + "/keyring", atomically: true, encoding: .utf8)
        try Shell.run(["ip", "netns", "add", self.bridgeNamespace])
        try Shell.run(["ip", "-n", self.bridgeNamespace, "link", "add", "br0", "type", "bridge"])
        try Shell.run(["ip", "-n", self.bridgeNamespace, "link", "set", "br0", "up"])
        for (index, name) in (names + bystanders).enumerated() {
            let namespace = "\(self.tag)-\(name)"
            let address = "10.\(self.subnet).0.\(index + 1)"
            try Shell.run(["ip", "netns", "add", namespace])
            let outer = "\(self.tag)\(index)"
            try Shell.run([
                "ip", "link", "add", outer, "netns", self.bridgeNamespace, "type", "veth", "peer", "name", "eth0",
                "netns", namespace,
            ])
            try Shell.run(["ip", "-n", self.bridgeNamespace, "link", "set", outer, "master", "br0", "up"])
            try Shell.run(["ip", "-n", namespace, "addr", "add", "\(address)/24", "dev", "eth0"])
            try Shell.run(["ip", "-n", namespace, "link", "set", "eth0", "up"])
            try Shell.run(["ip", "-n", namespace, "link", "set", "lo", "up"])
            let directory = "\(self.root)/\(name)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            self.hosts[name] = Host(name: name, namespace: namespace, address: address, directory: directory)
            self.order.append(name)
        }
    }

    /// Moves host `name` off the shared wire into a LAN of its own (`192.168.<lan>.2`) behind the bystander
    /// `router` (`192.168.<lan>.1`, forwarding to the wire), whose outbound UDP is translated by the nftables
    /// `nat` statement given (e.g. `masquerade fully-random`): a host behind a NAT (issue 15).
    func putBehindRouter(_ name: String, router: String, lan: Int, nat: String) throws {
        let host = self.host(name)
        let gateway = self.host(router)
        try Shell.run(["ip", "-n", host.namespace, "link", "del", "eth0"])
        try Shell.run([
            "ip", "link", "add", "lan\(lan)", "netns", gateway.namespace, "type", "veth", "peer", "name", "eth0",
            "netns", host.namespace,
        ])
        try Shell.run(["ip", "-n", gateway.namespace, "addr", "add", "192.168.\(lan).1/24", "dev", "lan\(lan)"])
        try Shell.run(["ip", "-n", gateway.namespace, "link", "set", "lan\(lan)", "up"])
        try Shell.run(["ip", "-n", host.namespace, "addr", "add", "192.168.\(lan).2/24", "dev", "eth0"])
        try Shell.run(["ip", "-n", host.namespace, "link", "set", "eth0", "up"])
        try Shell.run(["ip", "-n", host.namespace, "route", "add", "default", "via", "192.168.\(lan).1"])
        try Shell.run(["ip", "netns", "exec", gateway.namespace, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        let rules = """
            table ip vnsnap_nat {
                chain post {
                    type nat hook postrouting priority 100; policy accept;
                    oifname "eth0" ip saddr 192.168.\(lan).0/24 \(nat)
                }
                # Unsolicited datagrams to the router die before conntrack keeps them (as at a home router): a
                # kept one would hold the tuple a later outbound mapping needs, and the NAT would pick another port.
                chain in {
                    type filter hook input priority 0; policy accept;
                    iifname "eth0" ct state new drop
                }
            }
            """
        let file = "\(gateway.directory)/nat.nft"
        try rules.write(toFile: file, atomically: true, encoding: .utf8)
        try Shell.run(["ip", "netns", "exec", gateway.namespace, "nft", "-f", file])
        // Short UDP mappings, as many home routers keep them, so relay keepalives are exercised.
        for key in ["nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"] {
            _ = try? Shell.run(
                ["ip", "netns", "exec", gateway.namespace, "sysctl", "-qw", "net.netfilter.\(key)=20"],
                allowFailure: true
            )
        }
        self.hosts[name]?.address = "192.168.\(lan).2"
        // Hosts on the wire know no way into a LAN (as on the internet): their datagrams to private addresses
        // go to an address nobody has, and vanish, rather than failing the send.
        for other in self.hosts.values where other.address.hasPrefix("10.") && other.name != router {
            _ = try? Shell.run(
                ["ip", "-n", other.namespace, "route", "replace", "192.168.0.0/16", "via", "10.\(self.subnet).0.250"],
                allowFailure: true
            )
        }
    }

    /// Drops every datagram host `name` did not ask for (nftables: only established flows come in).
    func blockInbound(_ name: String) throws {
        let host = self.host(name)
        let rules = """
            table inet vnsnap_firewall {
                chain input {
                    type filter hook input priority 0; policy drop;
                    iif "lo" accept
                    ct state established,related accept
                }
            }
            """
        let file = "\(host.directory)/firewall.nft"
        try rules.write(toFile: file, atomically: true, encoding: .utf8)
        try Shell.run(["ip", "netns", "exec", host.namespace, "nft", "-f", file])
    }

    func host(_ name: String) -> Host { self.hosts[name]! }

    func controlSocket(_ name: String) -> String { "\(self.host(name).directory)/control.sock" }

    func serialLog(host: String, vm: String) -> String { "\(self.host(host).directory)/data/vms/\(vm)/serial.log" }

    /// The `[peer]`, `[cluster]` and `[membership]` part of a host's config: every other peer is a seed, each
    /// host has its own copy of the keyring (as separate machines would), `membership` adds settings.
    func baseConfig(
        _ name: String,
        port: Int = 7946,
        cluster: String? = nil,
        keyring: Keyring? = nil,
        membership: String = ""
    ) -> String {
        let me = self.host(name)
        let keyringPath = "\(me.directory)/keyring"
        if !FileManager.default.fileExists(atPath: keyringPath) || keyring != nil {
            try? (keyring ?? self.keyring).fileText.write(toFile: keyringPath, atomically: true, encoding: .utf8)
        }
        let seeds = self.peerNames.filter { $0 != name }.map { "\"\(self.host($0).address):\(port + 1)\"" }
        return """
            [peer]
            name = "\(name)"
            bind = "\(me.address):\(port)"
            data_dir = "\(me.directory)/data"
            control_socket = "\(me.directory)/control.sock"

            [cluster]
            name = "\(cluster ?? self.tag)"
            keyring = "\(keyringPath)"

            [membership]
            seeds = [\(seeds.joined(separator: ", "))]
            \(membership)

            """
    }

    /// Polls `name`'s status until `condition` holds; throws with the last status if it does not in time.
    @discardableResult
    func waitUntil(
        _ name: String,
        timeout: Duration = .seconds(30),
        _ what: String,
        _ condition: (PeerStatus) -> Bool
    ) async throws -> PeerStatus {
        let deadline = ContinuousClock.now + timeout
        var last: PeerStatus?
        while ContinuousClock.now < deadline {
            if let status = try? await self.status(name, timeout: .seconds(2)) {
                last = status
                if condition(status) { return status }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        let members = last?.membership.members.map { "\($0.name)=\($0.state)" }.joined(separator: " ") ?? "no status"
        throw Shell.Failure(
            description: "\(name): not \(what) within \(timeout); members \(members), initiator "
                + "\(last?.membership.election.initiator ?? "none"), term \(last?.membership.election.term ?? 0)"
        )
    }

    /// The state of every member as `name` sees it.
    static func states(_ status: PeerStatus) -> [String: String] {
        Dictionary(uniqueKeysWithValues: status.membership.members.map { ($0.name, $0.state) })
    }

    /// Sends `signal` to a host's peer process.
    func signalPeer(_ name: String, _ signal: Int32) {
        if let pid = self.hosts[name]?.peerPID { kill(pid, signal) }
    }

    /// A `[[vms]]` entry booting the test guest (with `disk` attached, if given).
    static func guestVM(
        name: String,
        violin: String,
        mac: String,
        append: String,
        memory: Int = 128,
        disk: String? = nil
    ) -> String {
        """

        [[vms]]
        name = "\(name)"
        violin = "\(violin)"
        mac = "\(mac)"
        memory_mib = \(memory)
        kernel = "\(LiveEnvironment.guestDirectory)/vmlinuz"
        initrd = "\(LiveEnvironment.guestDirectory)/initrd.img"
        append = "console=ttyS0 quiet panic=-1 no_timer_check \(append)"
        accel = "tcg"
        \(disk.map { "disk = \"\($0)\"" } ?? "")

        """
    }

    /// Writes the host's config and starts `vnsnap-peer run` inside its namespace (with `arguments` added and
    /// `environment` set).
    func startPeer(_ name: String, config: String, arguments: [String] = [], environment: [String: String] = [:]) throws
    {
        let me = self.host(name)
        let configPath = "\(me.directory)/peer.toml"
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments =
            [
                "ip", "netns", "exec", me.namespace, LiveEnvironment.peerBinary, "run", "--config", configPath,
            ] + arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        let log = "\(me.directory)/peer.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.hosts[name]!.peerPID = process.processIdentifier
    }

    /// The peer's status over its control socket, once it answers.
    func status(_ name: String, timeout: Duration = .seconds(20)) async throws -> PeerStatus {
        let deadline = ContinuousClock.now + timeout
        var lastError: any Error = Shell.Failure(description: "no answer")
        while ContinuousClock.now < deadline {
            do {
                let response = try await ControlClient.request(
                    ControlRequest(command: "status"),
                    socket: self.controlSocket(name)
                )
                if let status = response.status { return status }
                lastError = Shell.Failure(description: response.error ?? "no status")
            } catch {
                lastError = error
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw lastError
    }

    /// Waits for a line containing `marker` in a VM's serial log and returns it.
    func waitForSerial(host: String, vm: String, containing marker: String, timeout: Duration) async throws -> String {
        let path = self.serialLog(host: host, vm: vm)
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let text = try? String(contentsOfFile: path, encoding: .utf8),
                let line = text.split(separator: "\n").first(where: { $0.contains(marker) })
            {
                return String(line)
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        let tail = ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "(no log)").suffix(1500)
        let peerLog = self.peerLogSummary(host)
        throw Shell.Failure(
            description:
                "\(vm) on \(host): no \"\(marker)\" within \(timeout). Serial tail:\n\(tail)\nPeer log tail:\n\(peerLog)"
        )
    }

    /// The interesting part of a peer's log: a crash message if there is one, else its tail.
    func peerLogSummary(_ name: String) -> String {
        let text = (try? String(contentsOfFile: "\(self.host(name).directory)/peer.log", encoding: .utf8)) ?? "(no log)"
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        if let crash = lines.firstIndex(where: {
            $0.contains("Fatal error") || $0.contains("💣") || $0.contains("Crash")
        }) {
            return lines[max(0, crash - 5)..<min(lines.count, crash + 25)].joined(separator: "\n")
        }
        return String(text.suffix(1500))
    }

    /// Runs a command inside a host's namespace.
    @discardableResult
    func exec(_ name: String, _ arguments: [String]) throws -> String {
        // The test process sees the whole PATH; `ip netns exec` needs absolute binaries for ours.
        try Shell.run(["ip", "netns", "exec", self.host(name).namespace] + arguments)
    }

    /// Stops every peer (SIGTERM, then SIGKILL), kills anything left in the namespaces by pid, removes them.
    func teardown() async {
        for name in self.order {
            if let pid = self.hosts[name]?.peerPID { kill(pid, SIGTERM) }
        }
        let deadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < deadline {
            let alive = self.order.compactMap { self.hosts[$0]?.peerPID }.filter {
                kill($0, 0) == 0 && !Self.isZombie($0)
            }
            if alive.isEmpty { break }
            try? await Task.sleep(for: .milliseconds(100))
        }
        for name in self.order {
            if let pid = self.hosts[name]?.peerPID, kill(pid, 0) == 0 { kill(pid, SIGKILL) }
        }
        Self.removeNamespaces(prefix: self.tag)
        // VNSNAP_KEEP_LIVE=1 keeps the hosts' files (peer logs, serial logs) to look into a failure.
        if ProcessInfo.processInfo.environment["VNSNAP_KEEP_LIVE"] == nil {
            try? FileManager.default.removeItem(atPath: self.root)
        }
    }

    /// Waits (up to 30 s) until host `name`'s peer process has exited.
    func waitForExit(_ name: String) async throws {
        guard let pid = self.host(name).peerPID else { return }
        for _ in 0..<300 where kill(pid, 0) == 0 && !Self.isZombie(pid) {
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Whether `pid` is gone or a zombie (exited, not yet reaped).
    static func isZombie(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
        return stat.split(separator: ")").last?.trimmingCharacters(in: .whitespaces).hasPrefix("Z") ?? true
    }

    /// Kills every process in our namespaces whose names start with `prefix`, by pid, and deletes them.
    static func removeNamespaces(prefix: String) {
        let list = (try? Shell.run(["ip", "netns", "list"])) ?? ""
        let namespaces = list.split(separator: "\n").map { String($0.split(separator: " ")[0]) }.filter {
            $0.hasPrefix(prefix)
        }
        for namespace in namespaces {
            let pids = ((try? Shell.run(["ip", "netns", "pids", namespace], allowFailure: true)) ?? "")
                .split(separator: "\n").compactMap { Int32($0) }
            for pid in pids { kill(pid, SIGKILL) }
        }
        for namespace in namespaces {
            _ = try? Shell.run(["ip", "netns", "del", namespace], allowFailure: true)
        }
    }
}
