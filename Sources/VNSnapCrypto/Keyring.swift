/// The cluster's keys: the primary seals, every installed key opens (DESIGN §5).
public struct Keyring: Sendable, Hashable {
    /// Installed keys, primary first.
    public private(set) var keys: [SecretKey]

    /// A keyring whose first key is primary; `nil` if empty or if two keys share a key id.
    public init?(keys: [SecretKey]) {
        guard !keys.isEmpty, Set(keys.map(\.keyID)).count == keys.count else { return nil }
        self.keys = keys
    }

    /// The key that seals.
    public var primary: SecretKey { self.keys[0] }

    /// The installed key with this id.
    public func key(id: UInt32) -> SecretKey? {
        self.keys.first { $0.keyID == id }
    }

    /// Parses keyring file text: one base64 32-byte key per line, the first is primary.
    /// Blank lines and lines starting with `#` are ignored.
    public static func parse(_ text: String, path: String) throws(KeyringError) -> Keyring {
        var keys: [SecretKey] = []
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let key = SecretKey(base64: line) else {
                throw KeyringError(
                    path: path,
                    line: index + 1,
                    message: "not a base64-encoded 32-byte key"
                )
            }
            if let earlier = keys.first(where: { $0.keyID == key.keyID }) {
                throw KeyringError(
                    path: path,
                    line: index + 1,
                    message: "duplicate key (fingerprint \(earlier.shortFingerprint))"
                )
            }
            keys.append(key)
        }
        guard let keyring = Keyring(keys: keys) else {
            throw KeyringError(path: path, line: nil, message: "no keys (expected one base64 32-byte key per line)")
        }
        return keyring
    }

    /// The file text for these keys.
    public var fileText: String {
        self.keys.map(\.base64).joined(separator: "\n") + "\n"
    }
}

/// A keyring file that cannot be used, naming the file, the line and what is wrong.
public struct KeyringError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The keyring file.
    public var path: String
    /// 1-based line, when the problem is on one line.
    public var line: Int?
    /// What is wrong.
    public var message: String

    /// Creates an error.
    public init(path: String, line: Int?, message: String) {
        self.path = path
        self.line = line
        self.message = message
    }

    public var description: String {
        if let line = self.line { return "\(self.path):\(line): \(self.message)" }
        return "\(self.path): \(self.message)"
    }
}

extension Substring {
    fileprivate func trimmingWhitespace() -> String {
        let scalars = self.unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })!  // !-safe, `first` exists
        return String(scalars[first...last])
    }
}
