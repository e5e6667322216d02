/// A keyring change that cannot be made, for the operator.
public struct KeyringChangeError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What is wrong.
    public var message: String

    /// Creates an error.
    public init(_ message: String) {
        self.message = message
    }

    public var description: String { self.message }
}

extension Keyring {
    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Cluster-wide changes (serf's install → use → remove)

    /// The keyring with `key` installed (it opens, the primary still seals), one generation on.
    public func installing(_ key: SecretKey) throws(KeyringChangeError) -> Keyring {
        let generation = try self.nextGeneration()
        if self.keys.contains(key) { throw KeyringChangeError("key \(key.shortFingerprint) is already installed") }
        if let clash = self.key(id: key.keyID) {
            throw KeyringChangeError(
                "key \(key.shortFingerprint) has the same key id as installed \(clash.shortFingerprint)"
            )
        }
        guard self.keys.count < Self.maximumKeys else {
            throw KeyringChangeError("the keyring already holds \(Self.maximumKeys) keys; remove one first")
        }
        return Keyring(keys: self.keys + [key], generation: generation)!  // !-safe, checked above
    }

    /// The keyring with the installed `key` as primary, one generation on.
    public func using(_ key: SecretKey) throws(KeyringChangeError) -> Keyring {
        let generation = try self.nextGeneration()
        guard self.keys.contains(key) else {
            throw KeyringChangeError("key \(key.shortFingerprint) is not installed; install it first")
        }
        if self.primary == key { throw KeyringChangeError("key \(key.shortFingerprint) is already primary") }
        let keys = [key] + self.keys.filter { $0 != key }
        return Keyring(keys: keys, generation: generation)!  // !-safe, same keys
    }

    /// The keyring without `key`, one generation on; the primary cannot be removed.
    public func removing(_ key: SecretKey) throws(KeyringChangeError) -> Keyring {
        let generation = try self.nextGeneration()
        guard self.keys.contains(key) else { throw KeyringChangeError("key \(key.shortFingerprint) is not installed") }
        if self.primary == key {
            throw KeyringChangeError("key \(key.shortFingerprint) is primary; `use` another key first")
        }
        return Keyring(keys: self.keys.filter { $0 != key }, generation: generation)!  // !-safe, primary kept
    }

    private func nextGeneration() throws(KeyringChangeError) -> UInt64 {
        guard self.generation < UInt64.max else {
            throw KeyringChangeError("keyring generation \(self.generation) cannot be raised further")
        }
        return self.generation + 1
    }

    /// The installed key named by `reference`: its base64 form, or a prefix of its fingerprint (at least 8 hex
    /// digits, unambiguous).
    public func resolve(_ reference: String) throws(KeyringChangeError) -> SecretKey {
        if let key = SecretKey(base64: reference) {
            guard self.keys.contains(key) else {
                throw KeyringChangeError("key \(key.shortFingerprint) is not installed")
            }
            return key
        }
        let prefix = reference.lowercased()
        guard prefix.count >= 8, prefix.allSatisfy(\.isHexDigit) else {
            throw KeyringChangeError(
                "\"\(reference)\" is neither a base64 key nor a fingerprint prefix of 8+ hex digits"
            )
        }
        let matches = self.keys.filter { $0.fingerprint.hasPrefix(prefix) }
        guard matches.count == 1 else {
            throw KeyringChangeError(
                matches.isEmpty
                    ? "no installed key has a fingerprint starting \(prefix)"
                    : "fingerprint prefix \(prefix) is ambiguous"
            )
        }
        return matches[0]
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Wire (the keyring sync message between peers, sealed with a cluster key)

    /// `version:u8(1) generation:u64 count:u8 key[32]*count`, primary first.
    public var syncPayload: [UInt8] {
        var bytes: [UInt8] = [1]
        for shift in stride(from: 56, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: self.generation >> UInt64(shift)))
        }
        bytes.append(UInt8(self.keys.count))
        for key in self.keys { bytes += key.bytes }
        return bytes
    }

    /// Decodes a sync payload; `nil` if malformed.
    public init?(syncPayload bytes: [UInt8]) {
        guard bytes.count >= 10, bytes[0] == 1 else { return nil }
        let generation = bytes[1..<9].reduce(UInt64(0)) { ($0 << 8) | UInt64($1) }
        let count = Int(bytes[9])
        guard count >= 1, bytes.count == 10 + count * SecretKey.size else { return nil }
        var keys: [SecretKey] = []
        for index in 0..<count {
            let start = 10 + index * SecretKey.size
            guard let key = SecretKey(bytes: Array(bytes[start..<start + SecretKey.size])) else { return nil }
            keys.append(key)
        }
        self.init(keys: keys, generation: generation)
    }
}
