import CSodium

extension TunnelCrypto {
    /// Keys for the datagrams between this peer (`mine`) and the holder of `theirs`: each cluster key mixed with the
    /// pair's X25519 secret, so opening or forging them takes both a key of the ring and one of the two secrets. A
    /// relay, which holds the ring too, forwards them unread (DESIGN §10).
    ///
    /// Both sides derive the same keys; the nonces still differ per direction (they bind source and destination).
    /// Returns `nil` for a public key that is not a usable X25519 point.
    public func paired(_ mine: ExchangeKeyPair, with theirs: [UInt8]) -> TunnelCrypto? {
        guard var shared = mine.sharedSecret(with: theirs) else { return nil }
        defer { sodium_memzero(&shared, shared.count) }
        let context = Array("vnsnap/pair/v1\u{0}".utf8) + shared
        var paired = self
        paired.subkeys = self.subkeys.map { key in
            var derived = [UInt8](repeating: 0, count: 32)
            _ = crypto_generichash(&derived, 32, context, UInt64(context.count), key.bytes, key.bytes.count)
            return Subkey(keyID: key.keyID, bytes: derived)
        }
        return paired
    }
}
