import CSodium
import VNSnapCore

/// Seals and opens tunnel datagrams with XChaCha20-Poly1305 (DESIGN §4).
///
/// Each keyring key is first bound to the cluster name and purpose with keyed BLAKE2b, so a datagram
/// sealed for another cluster never opens here. The 24-byte nonce is BLAKE2b-128(source, destination,
/// session) followed by the 64-bit sequence number: unique per key as long as a sender never reuses a
/// sequence number within a session, which the switch guarantees by counting per tunnel.
/// Encryption and decryption work in place, so the data path copies each frame once.
public struct TunnelCrypto: Sendable {
    struct Subkey: Sendable {
        var keyID: UInt32
        var bytes: [UInt8]
    }

    private struct NonceContext: Hashable, Sendable {
        var source: UInt64
        var destination: UInt64
        var session: UInt64
    }

    var subkeys: [Subkey]
    private var nonceCache: [NonceContext: [UInt8]] = [:]

    /// Keys derived from `keyring` for the tunnels of cluster `clusterName`.
    public init(keyring: Keyring, clusterName: String, purpose: String = "tunnel") {
        _ = Sodium.ready
        let context = Array("vnsnap/\(purpose)/v1\u{0}\(clusterName)".utf8)
        self.subkeys = keyring.keys.map { key in
            var derived = [UInt8](repeating: 0, count: 32)
            _ = crypto_generichash(&derived, 32, context, UInt64(context.count), key.bytes, key.bytes.count)
            return Subkey(keyID: key.keyID, bytes: derived)
        }
    }

    /// Bytes a sealed datagram adds around the frame.
    public static let overhead = TunnelHeader.size + TunnelHeader.tagSize

    /// Seals in place: `buffer` holds the payload at offset `TunnelHeader.size`, `payloadLength` bytes long,
    /// with room for the tag after it. Writes the header (with the primary key's id) and the tag.
    ///
    /// - Returns: the datagram's length.
    /// `keyID` picks another installed key (a peer that has not caught up with a rotation yet); the primary
    /// seals when it is `nil` or not installed.
    public mutating func seal(
        header: TunnelHeader,
        payloadLength: Int,
        in buffer: UnsafeMutableRawBufferPointer,
        keyID: UInt32? = nil
    ) -> Int {
        let total = TunnelHeader.size + payloadLength + TunnelHeader.tagSize
        precondition(buffer.count >= total, "seal needs \(total) bytes, has \(buffer.count)")
        let key = keyID.flatMap { id in self.subkeys.first { $0.keyID == id } } ?? self.subkeys[0]
        var header = header
        header.keyID = key.keyID
        header.encode(into: buffer)
        let prefix = self.noncePrefix(header)
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { nonce in
            Self.fillNonce(nonce, prefix: prefix, sequence: header.sequence)
            let base = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)  // !-safe, count checked above
            let payload = base + TunnelHeader.size
            _ = crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
                payload,
                payload + payloadLength,
                nil,
                payload,
                UInt64(payloadLength),
                base,
                UInt64(TunnelHeader.size),
                nil,
                nonce.baseAddress!,  // !-safe, capacity 24
                key.bytes
            )
        }
        return total
    }

    /// Opens a datagram in place; on success the payload is at offset `TunnelHeader.size`.
    ///
    /// - Returns: the authenticated header and the payload length.
    /// - Throws: the drop reason: `truncated`, `badVersion`, `unknownKind`, `malformed`, `unknownKey`, `badTag`.
    public mutating func open(
        _ buffer: UnsafeMutableRawBufferPointer
    ) throws(TunnelDropReason) -> (header: TunnelHeader, payloadLength: Int) {
        // libsodium decrypts in place when the output is exactly the ciphertext.
        let payload = UnsafeMutableRawBufferPointer(rebasing: buffer[min(TunnelHeader.size, buffer.count)...])
        return try self.open(UnsafeRawBufferPointer(buffer), into: payload)
    }

    /// Opens a datagram into `output`, leaving the datagram untouched (the data path decrypts straight into a
    /// reusable buffer instead of copying a shared receive buffer first).
    ///
    /// - Returns: the authenticated header and the payload length written at the start of `output`.
    public mutating func open(
        _ datagram: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer
    ) throws(TunnelDropReason) -> (header: TunnelHeader, payloadLength: Int) {
        let header = try TunnelHeader.decode(datagram: datagram)
        guard let key = self.subkeys.first(where: { $0.keyID == header.keyID }) else { throw .unknownKey }
        let payloadLength = datagram.count - TunnelHeader.size - TunnelHeader.tagSize
        guard output.count >= payloadLength else { throw .oversized }
        let prefix = self.noncePrefix(header)
        let rc = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { nonce in
            Self.fillNonce(nonce, prefix: prefix, sequence: header.sequence)
            let base = datagram.baseAddress!.assumingMemoryBound(to: UInt8.self)  // !-safe, decode checked the size
            let ciphertext = base + TunnelHeader.size
            return crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
                output.baseAddress!.assumingMemoryBound(to: UInt8.self),  // !-safe, count checked above
                nil,
                ciphertext,
                UInt64(payloadLength),
                ciphertext + payloadLength,
                base,
                UInt64(TunnelHeader.size),
                nonce.baseAddress!,  // !-safe, capacity 24
                key.bytes
            )
        }
        guard rc == 0 else { throw .badTag }
        return (header, payloadLength)
    }

    /// Seals a payload into a fresh array (tests, fixtures and tools; the data path seals in place).
    public mutating func sealed(header: TunnelHeader, payload: [UInt8], keyID: UInt32? = nil) -> [UInt8] {
        var datagram = [UInt8](repeating: 0, count: TunnelHeader.size + payload.count + TunnelHeader.tagSize)
        datagram.replaceSubrange(TunnelHeader.size..<TunnelHeader.size + payload.count, with: payload)
        _ = datagram.withUnsafeMutableBytes {
            self.seal(header: header, payloadLength: payload.count, in: $0, keyID: keyID)
        }
        return datagram
    }

    /// Opens a datagram held in an array (tests and tools).
    public mutating func opened(_ datagram: [UInt8]) throws(TunnelDropReason) -> (TunnelHeader, [UInt8]) {
        var copy = datagram
        let result: Result<(TunnelHeader, Int), TunnelDropReason> = copy.withUnsafeMutableBytes { buffer in
            do throws(TunnelDropReason) {
                return .success(try self.open(buffer))
            } catch {
                return .failure(error)
            }
        }
        let (header, length) = try result.get()
        return (header, Array(copy[TunnelHeader.size..<TunnelHeader.size + length]))
    }

    mutating func noncePrefix(_ header: TunnelHeader) -> [UInt8] {
        let context = NonceContext(
            source: header.source.rawValue,
            destination: header.destination.rawValue,
            session: header.session
        )
        if let cached = self.nonceCache[context] { return cached }
        var input = [UInt8](repeating: 0, count: 24)
        input.withUnsafeMutableBytes { raw in
            raw.storeBigEndian(context.source, at: 0)
            raw.storeBigEndian(context.destination, at: 8)
            raw.storeBigEndian(context.session, at: 16)
        }
        var prefix = [UInt8](repeating: 0, count: 16)
        _ = crypto_generichash(&prefix, 16, input, 24, nil, 0)
        // Bounded: sessions change only when peers restart, but a forger can invent contexts.
        if self.nonceCache.count >= 4096 { self.nonceCache.removeAll(keepingCapacity: true) }
        self.nonceCache[context] = prefix
        return prefix
    }

    static func fillNonce(_ nonce: UnsafeMutableBufferPointer<UInt8>, prefix: [UInt8], sequence: UInt64) {
        for i in 0..<16 { nonce[i] = prefix[i] }
        var s = sequence.bigEndian
        withUnsafeBytes(of: &s) { bytes in
            for i in 0..<8 { nonce[16 + i] = bytes[i] }
        }
    }
}
