import CSodium

/// A peer's X25519 key pair for end-to-end tunnel keys (DESIGN §10): the public half is gossiped in its membership
/// metadata, and two peers derive a key for their datagrams that a relay forwarding them cannot derive.
///
/// Made fresh at every start: a peer's past traffic stays sealed even if a later run's secret leaks.
public struct ExchangeKeyPair: Sendable {
    /// Bytes of a public key.
    public static let publicKeySize = Int(crypto_scalarmult_BYTES)

    /// The public half, gossiped.
    public let publicKey: [UInt8]
    private let secretKey: [UInt8]

    private init(publicKey: [UInt8], secretKey: [UInt8]) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// A fresh random pair.
    public static func generate() -> ExchangeKeyPair {
        _ = Sodium.ready
        var secret = [UInt8](repeating: 0, count: Int(crypto_scalarmult_SCALARBYTES))
        randombytes_buf(&secret, secret.count)
        var publicKey = [UInt8](repeating: 0, count: Self.publicKeySize)
        _ = crypto_scalarmult_base(&publicKey, secret)
        return ExchangeKeyPair(publicKey: publicKey, secretKey: secret)
    }

    /// The X25519 secret shared with the holder of `theirs`, hashed with both public keys (in a fixed order, so both
    /// sides agree); `nil` for a key of the wrong size or a low-order point (which would make the secret guessable).
    public func sharedSecret(with theirs: [UInt8]) -> [UInt8]? {
        guard theirs.count == Self.publicKeySize else { return nil }
        var point = [UInt8](repeating: 0, count: Int(crypto_scalarmult_BYTES))
        guard crypto_scalarmult(&point, self.secretKey, theirs) == 0 else { return nil }
        defer { sodium_memzero(&point, point.count) }
        let (low, high) =
            self.publicKey.lexicographicallyPrecedes(theirs) ? (self.publicKey, theirs) : (theirs, self.publicKey)
        let input = point + low + high
        var shared = [UInt8](repeating: 0, count: 32)
        _ = crypto_generichash(&shared, 32, input, UInt64(input.count), nil, 0)
        return shared
    }
}
