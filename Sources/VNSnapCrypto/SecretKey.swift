import CSodium
import VNSnapCore

/// A 32-byte symmetric cluster key, with its public fingerprint.
public struct SecretKey: Sendable, Hashable {
    /// Key length in bytes.
    public static let size = 32

    /// The key bytes. Never logged; `description` shows only the fingerprint.
    public let bytes: [UInt8]
    /// BLAKE2b-256 of the key, as lowercase hex: safe to show and compare.
    public let fingerprint: String
    /// The first 4 bytes of the fingerprint, carried in datagram headers to pick the key.
    public let keyID: UInt32

    /// Wraps 32 key bytes; `nil` for any other length.
    public init?(bytes: [UInt8]) {
        guard bytes.count == Self.size else { return nil }
        _ = Sodium.ready
        self.bytes = bytes
        var digest = [UInt8](repeating: 0, count: 32)
        _ = crypto_generichash(&digest, 32, bytes, UInt64(bytes.count), nil, 0)
        self.fingerprint = digest.hexString
        self.keyID = digest[0..<4].reduce(0) { ($0 << 8) | UInt32($1) }
    }

    /// Parses a base64 key as written in a keyring file.
    public init?(base64: String) {
        _ = Sodium.ready
        let text = Array(base64.utf8)
        var decoded = [UInt8](repeating: 0, count: Self.size + 8)
        var length = 0
        let rc = text.withUnsafeBufferPointer { input in
            input.withMemoryRebound(to: CChar.self) { chars in
                sodium_base642bin(
                    &decoded,
                    decoded.count,
                    chars.baseAddress,
                    chars.count,
                    nil,
                    &length,
                    nil,
                    sodium_base64_VARIANT_ORIGINAL
                )
            }
        }
        guard rc == 0 else { return nil }
        self.init(bytes: Array(decoded[0..<length]))
    }

    /// A fresh random key.
    public static func generate() -> SecretKey {
        _ = Sodium.ready
        var bytes = [UInt8](repeating: 0, count: size)
        randombytes_buf(&bytes, size)
        return SecretKey(bytes: bytes)!  // !-safe, because the length is `size`
    }

    /// The key in base64, as written in keyring files.
    public var base64: String {
        let capacity = sodium_base64_encoded_len(Self.size, sodium_base64_VARIANT_ORIGINAL)
        var output = [CChar](repeating: 0, count: capacity)
        _ = sodium_bin2base64(&output, capacity, self.bytes, self.bytes.count, sodium_base64_VARIANT_ORIGINAL)
        return String(decoding: output.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// A short form of the fingerprint for humans.
    public var shortFingerprint: String { String(self.fingerprint.prefix(16)) }
}

extension SecretKey: CustomStringConvertible {
    public var description: String { "SecretKey(\(self.shortFingerprint))" }
}
