/// A configuration that cannot be used, naming the file, the key and what is wrong.
public struct ConfigError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The config file.
    public var path: String
    /// The offending key, dotted (`vms[1].mac`), or `nil` for the file as a whole.
    public var key: String?
    /// What is wrong.
    public var message: String

    /// Creates an error.
    public init(path: String, key: String?, message: String) {
        self.path = path
        self.key = key
        self.message = message
    }

    public var description: String {
        if let key = self.key { return "\(self.path): \(key): \(self.message)" }
        return "\(self.path): \(self.message)"
    }
}
