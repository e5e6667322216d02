import NIOCore

extension SocketAddress {
    /// `10.0.0.1:7946` or `[::1]:7946`, as the config writes addresses (NIO's description adds a prefix).
    var displayString: String {
        guard let ip = self.ipAddress, let port = self.port else { return "\(self)" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}
