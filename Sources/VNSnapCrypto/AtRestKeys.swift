import CSodium
import VNSnapCore

/// The keys images are sealed with at rest (issue 18): one per snapshot and cluster key, derived from the keyring,
/// so a chunk sealed under a key stays readable while that key is in the ring, and a stolen disk or a store peer's
/// files reveal no guest memory.
public struct AtRestKeys: Sendable {
    private let keyring: Keyring
    private let context: [UInt8]

    /// The keys of `keyring` for cluster `clusterName`.
    public init(keyring: Keyring, clusterName: String) {
        _ = Sodium.ready
        self.keyring = keyring
        self.context = Array("vnsnap/at-rest/v1\u{0}\(clusterName)\u{0}".utf8)
    }

    /// The key new chunks of `snapshot` are sealed with: the primary's, and its id.
    public func sealing(snapshot: UInt64) -> (id: UInt32, bytes: [UInt8]) {
        (self.keyring.primary.keyID, Self.derive(self.keyring.primary, self.context, snapshot))
    }

    /// The key of `snapshot` under cluster key `id`, while that key is in the ring.
    public func opening(snapshot: UInt64) -> @Sendable (UInt32) -> [UInt8]? {
        { [keyring, context] id in keyring.key(id: id).map { Self.derive($0, context, snapshot) } }
    }

    private static func derive(_ key: SecretKey, _ context: [UInt8], _ snapshot: UInt64) -> [UInt8] {
        let input = context + withUnsafeBytes(of: snapshot.bigEndian) { Array($0) }
        var derived = [UInt8](repeating: 0, count: 32)
        _ = crypto_generichash(&derived, 32, input, UInt64(input.count), key.bytes, key.bytes.count)
        return derived
    }
}
