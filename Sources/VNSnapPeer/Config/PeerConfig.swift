import VNSnapCore
import VNSnapCrypto

/// A peer's whole configuration, validated: what `vnsnap-peer run --config FILE` runs.
public struct PeerConfig: Sendable {
    /// This peer.
    public struct Peer: Sendable, Hashable {
        /// Unique name in the cluster; its `PeerID` derives from it.
        public var name: String
        /// UDP address the tunnels (and later membership) bind to.
        public var bind: HostPort
        /// Where VM sockets, logs and images live.
        public var dataDirectory: String
        /// Unix socket of the control API (`status` talks to it).
        public var controlSocket: String
        /// What this peer does.
        public var roles: Set<PeerRole>

        /// This peer's identity.
        public var id: PeerID { PeerID(name: self.name) }
    }

    /// The cluster this peer belongs to.
    public struct Cluster: Sendable, Hashable {
        /// Name; bound into every key, so clusters with different names never talk.
        public var name: String
        /// Path of the keyring file.
        public var keyringPath: String
    }

    /// Another peer, from the static list (membership replaces it later).
    public struct StaticPeer: Sendable, Hashable {
        /// Its name.
        public var name: String
        /// Its tunnel address.
        public var address: HostPort

        /// Its identity.
        public var id: PeerID { PeerID(name: self.name) }
    }

    /// The file it was read from.
    public var path: String
    /// This peer.
    public var peer: Peer
    /// The cluster.
    public var cluster: Cluster
    /// The keyring, loaded and checked.
    public var keyring: Keyring
    /// Other peers.
    public var peers: [StaticPeer]
    /// VIOLINs known to this peer.
    public var violins: [Violin]
    /// VMs this peer runs.
    public var vms: [VMDefinition]

    /// The VIOLIN called `name`.
    public func violin(named name: String) -> Violin? {
        self.violins.first { $0.name == name }
    }

    /// Directory of one VM's sockets and logs.
    public func vmDirectory(_ vm: String) -> String { "\(self.peer.dataDirectory)/vms/\(vm)" }

    /// The switch port socket of one VM.
    public func switchPortSocket(_ vm: String) -> String { "\(self.peer.dataDirectory)/ports/\(vm).sock" }
}

/// A `host:port` pair as written in the config.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    /// IPv4 or IPv6 literal (or a name resolved at bind time).
    public var host: String
    /// UDP port.
    public var port: Int

    /// Creates one.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `1.2.3.4:7946` or `[::1]:7946`; `nil` if malformed.
    public init?(_ text: String) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else { return nil }
        self.host = String(host)
        self.port = port
    }

    public var description: String {
        self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
    }
}
