import CSodium

/// The cluster's keys: the primary seals, every installed key opens (DESIGN §5).
///
/// Every cluster-wide change (`vnsnap-peer keys install|use|remove`) raises the generation; peers adopt the
/// keyring that is newer by (generation, digest), so all of them converge on one.
public struct Keyring: Sendable, Hashable {
    /// Most keys installed at once (a rotation needs two; the bound keeps sync messages in one datagram).
    public static let maximumKeys = 16

    /// Installed keys, primary first.
    public private(set) var keys: [SecretKey]
    /// Raised by every cluster-wide change; 0 for a keyring written by hand.
    public private(set) var generation: UInt64

    /// A keyring whose first key is primary; `nil` if empty, too large, or if two keys share a key id.
    public init?(keys: [SecretKey], generation: UInt64 = 0) {
        guard !keys.isEmpty, keys.count <= Self.maximumKeys, Set(keys.map(\.keyID)).count == keys.count else {
            return nil
        }
        self.keys = keys
        self.generation = generation
    }

    /// First 4 bytes of BLAKE2b over the primary and then the other keys in key-id order: equal for equal
    /// keyrings whatever order the others were installed in.
    public var digest: UInt32 {
        _ = Sodium.ready
        let rest = self.keys.dropFirst().sorted { $0.keyID < $1.keyID }
        let input = ([self.primary] + rest).flatMap(\.bytes)
        var hash = [UInt8](repeating: 0, count: 16)
        _ = crypto_generichash(&hash, 16, input, UInt64(input.count), nil, 0)
        return hash[0..<4].reduce(0) { ($0 << 8) | UInt32($1) }
    }

    /// Whether a keyring of (`generation`, `digest`) should replace this one.
    public func isSuperseded(byGeneration generation: UInt64, digest: UInt32) -> Bool {
        (generation, digest) > (self.generation, self.digest)
    }

    /// The key that seals.
    public var primary: SecretKey { self.keys[0] }

    /// The installed key with this id.
    public func key(id: UInt32) -> SecretKey? {
        self.keys.first { $0.keyID == id }
    }

    /// Parses keyring file text: one base64 32-byte key per line, the first is primary.
    /// Blank lines and lines starting with `#` are ignored.
    /// A `# generation: N` comment (written by `fileText`) sets the generation.
    public static func parse(_ text: String, path: String) throws(KeyringError) -> Keyring {
        var keys: [SecretKey] = []
        var generation: UInt64 = 0
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmingWhitespace()
            if line.hasPrefix(Self.generationPrefix) {
                guard let value = UInt64(line.dropFirst(Self.generationPrefix.count).trimmingWhitespace()) else {
                    throw KeyringError(path: path, line: index + 1, message: "generation is not a whole number")
                }
                generation = value
                continue
            }
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
        guard !keys.isEmpty else {
            throw KeyringError(path: path, line: nil, message: "no keys (expected one base64 32-byte key per line)")
        }
        guard let keyring = Keyring(keys: keys, generation: generation) else {
            throw KeyringError(path: path, line: nil, message: "more than \(Self.maximumKeys) keys")
        }
        return keyring
    }

    static let generationPrefix = "# generation:"

    /// The file text for these keys: a header with the generation, then one key per line, primary first.
    public var fileText: String {
        "# vnsnap-peer cluster keyring: the first key seals, every key opens. Changed by `vnsnap-peer keys`.\n"
            + "\(Self.generationPrefix) \(self.generation)\n"
            + self.keys.map(\.base64).joined(separator: "\n") + "\n"
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
