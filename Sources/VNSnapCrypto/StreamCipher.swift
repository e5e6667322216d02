import CSodium
import VNSnapCore

/// Encryption of one peer-to-peer stream (image chunks to a store, DESIGN §7): libsodium's secretstream
/// (XChaCha20-Poly1305) under a key used for this stream alone, derived from the cluster key and a random
/// salt. Every message is authenticated, and a message dropped, replayed, reordered or cut off, or a stream
/// ended early, is detected.
///
/// The sealing side sends `header` first; the opening side needs it and the same cluster key (the key id in
/// the header picks it from the keyring).
public struct StreamSealer: Sendable {
    /// Bytes of the header: key id (4), salt (32), secretstream header (24).
    public static let headerSize = 4 + 32 + Int(crypto_secretstream_xchacha20poly1305_HEADERBYTES)
    /// Bytes each sealed message adds to its plaintext.
    public static let overhead = Int(crypto_secretstream_xchacha20poly1305_ABYTES)

    private var state = crypto_secretstream_xchacha20poly1305_state()
    /// Sent before any message.
    public let header: [UInt8]

    /// Starts a stream under `key` with a fresh salt; `context` binds it to its purpose (both sides must agree), and
    /// `shared` (a Diffie-Hellman secret of the two ends, or empty) mixes in a secret the cluster's key holders lack.
    public init(key: SecretKey, context: String, shared: [UInt8] = []) {
        _ = Sodium.ready
        var salt = [UInt8](repeating: 0, count: 32)
        randombytes_buf(&salt, salt.count)
        var streamKey = StreamKeys.derive(key, salt: salt, context: context, shared: shared)
        var streamHeader = [UInt8](repeating: 0, count: Int(crypto_secretstream_xchacha20poly1305_HEADERBYTES))
        _ = crypto_secretstream_xchacha20poly1305_init_push(&self.state, &streamHeader, streamKey)
        sodium_memzero(&streamKey, streamKey.count)
        self.header = StreamKeys.keyIDBytes(key.keyID) + salt + streamHeader
    }

    /// Seals one message; `final` marks the stream's last one.
    public mutating func seal(_ message: [UInt8], final: Bool = false) -> [UInt8] {
        var sealed = [UInt8](repeating: 0, count: message.count + Self.overhead)
        let tag =
            final ? crypto_secretstream_xchacha20poly1305_TAG_FINAL : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
        _ = crypto_secretstream_xchacha20poly1305_push(
            &self.state,
            &sealed,
            nil,
            message,
            UInt64(message.count),
            nil,
            0,
            UInt8(tag)
        )
        return sealed
    }
}

/// The opening side of a `StreamSealer`'s stream.
public struct StreamOpener: Sendable {
    private var state = crypto_secretstream_xchacha20poly1305_state()
    /// Whether the final message has been opened (nothing may follow it).
    public private(set) var finished = false

    /// The key id a stream's header names, to pick the key from the keyring.
    public static func keyID(ofHeader header: [UInt8]) throws(StreamCipherError) -> UInt32 {
        guard header.count == StreamSealer.headerSize else {
            throw StreamCipherError("stream header of \(header.count) bytes, not \(StreamSealer.headerSize)")
        }
        return header[0..<4].reduce(0) { ($0 << 8) | UInt32($1) }
    }

    /// Opens a stream from its header under `key`, which must be the one the header names, with the sealer's
    /// `context` and `shared` secret.
    public init(key: SecretKey, header: [UInt8], context: String, shared: [UInt8] = []) throws(StreamCipherError) {
        _ = Sodium.ready
        guard try Self.keyID(ofHeader: header) == key.keyID else {
            throw StreamCipherError("the stream is sealed under another key than \(key.fingerprint.prefix(16))…")
        }
        var streamKey = StreamKeys.derive(key, salt: Array(header[4..<36]), context: context, shared: shared)
        let rc = crypto_secretstream_xchacha20poly1305_init_pull(&self.state, Array(header[36...]), streamKey)
        sodium_memzero(&streamKey, streamKey.count)
        guard rc == 0 else { throw StreamCipherError("bad stream header") }
    }

    /// Opens the next message; throws if it is forged, damaged, out of order, or follows the final one.
    public mutating func open(_ sealed: [UInt8]) throws(StreamCipherError) -> (message: [UInt8], final: Bool) {
        guard !self.finished else { throw StreamCipherError("a message after the stream's final one") }
        guard sealed.count >= StreamSealer.overhead else {
            throw StreamCipherError("a sealed message of \(sealed.count) bytes is too short")
        }
        var message = [UInt8](repeating: 0, count: sealed.count - StreamSealer.overhead)
        var tag: UInt8 = 0
        let rc = crypto_secretstream_xchacha20poly1305_pull(
            &self.state,
            &message,
            nil,
            &tag,
            sealed,
            UInt64(sealed.count),
            nil,
            0
        )
        guard rc == 0 else {
            throw StreamCipherError("a message failed authentication (forged, damaged, or out of order)")
        }
        self.finished = tag == UInt8(crypto_secretstream_xchacha20poly1305_TAG_FINAL)
        return (message, self.finished)
    }
}

/// Why a stream cannot be opened.
public struct StreamCipherError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What is wrong.
    public var message: String

    /// Creates an error.
    public init(_ message: String) { self.message = message }

    public var description: String { self.message }
}

/// The per-stream key: BLAKE2b keyed with the cluster key, over the salt, the shared secret (if any) and the context.
enum StreamKeys {
    static func derive(_ key: SecretKey, salt: [UInt8], context: String, shared: [UInt8]) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: Int(crypto_secretstream_xchacha20poly1305_KEYBYTES))
        var input = salt + shared + Array("vnsnap-stream/\(context)".utf8)
        defer { sodium_memzero(&input, input.count) }
        _ = crypto_generichash(&output, output.count, input, UInt64(input.count), key.bytes, key.bytes.count)
        return output
    }

    static func keyIDBytes(_ id: UInt32) -> [UInt8] {
        [UInt8(id >> 24), UInt8((id >> 16) & 0xff), UInt8((id >> 8) & 0xff), UInt8(id & 0xff)]
    }
}
