/// A `host:port` pair: as written in the config, and as a peer sees another's datagrams come from (issue 15).
public struct HostPort: Sendable, Hashable, Codable, CustomStringConvertible {
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
