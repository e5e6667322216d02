import CSodium
import VNSnapCore

/// The envelope around a datagram that goes through a relay, and a relay session's keepalive (issue 15).
///
/// Layout: an outer `TunnelHeader` (kind `relay`, `relayed` or `relayHello`; source and destination are the
/// hop's two ends), `metaLength:u8 meta`, a 16-byte tag, then the inner datagram unchanged. The meta is not
/// secret and not encrypted; the tag authenticates the outer header, the meta, and the inner datagram's header
/// and tag (so the inner cannot be swapped under a valid envelope, at the cost of 112 bytes of MAC, not the whole
/// frame). The relay checks only this envelope: it never opens the inner datagram, which stays sealed between
/// its two ends.
public struct RelayEnvelope: Sendable, Hashable {
    /// What the meta says.
    public enum Meta: Sendable, Hashable {
        /// To a relay: forward to `target`.
        case forward(target: PeerID)
        /// From a relay: the inner datagram came from `origin`, seen by the relay at `observed` (`host:port`).
        case forwarded(origin: PeerID, observed: String)
        /// A session keepalive (`answer` false), or the relay's answer saying where it sees the sender.
        case hello(answer: Bool, observed: String)

        var kind: TunnelHeader.Kind {
            switch self {
            case .forward: return .relay
            case .forwarded: return .relayed
            case .hello: return .relayHello
            }
        }
    }

    /// The authenticated outer header.
    public var header: TunnelHeader
    /// What the envelope says.
    public var meta: Meta
    /// Where the inner datagram starts in the enveloped datagram (its end is the datagram's end).
    public var innerOffset: Int

    /// Most bytes an envelope adds around a datagram: header, meta (at most 80 bytes) and tag.
    public static let maximumOverhead = TunnelHeader.size + 1 + 80 + TunnelHeader.tagSize

    /// Whether a header's kind is one of the envelope's.
    public static func isEnvelope(_ kind: TunnelHeader.Kind) -> Bool {
        kind == .relay || kind == .relayed || kind == .relayHello
    }

    /// Bytes of the envelope around an inner datagram of `innerCount` bytes.
    public static func size(of meta: Meta, inner innerCount: Int) -> Int {
        TunnelHeader.size + 1 + Self.encode(meta).count + TunnelHeader.tagSize + innerCount
    }

    /// Wraps `inner` (empty for a keepalive) in an envelope sealed with the primary key (or `keyID`'s).
    public static func wrap(
        _ meta: Meta,
        header: TunnelHeader,
        inner: UnsafeRawBufferPointer,
        crypto: inout TunnelCrypto,
        keyID: UInt32? = nil
    ) -> [UInt8] {
        var datagram = [UInt8](repeating: 0, count: Self.size(of: meta, inner: inner.count))
        _ = datagram.withUnsafeMutableBytes {
            Self.wrap(meta, header: header, inner: inner, into: $0, crypto: &crypto, keyID: keyID)
        }
        return datagram
    }

    /// Wraps `inner` into `output`, which MUST have room for `size(of:inner:)` bytes; returns the bytes written.
    /// The inner datagram is copied once, and only its header and tag are authenticated again.
    public static func wrap(
        _ meta: Meta,
        header: TunnelHeader,
        inner: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer,
        crypto: inout TunnelCrypto,
        keyID: UInt32? = nil
    ) -> Int {
        var header = header
        header.kind = meta.kind
        let key = keyID.flatMap { id in crypto.subkeys.first { $0.keyID == id } } ?? crypto.subkeys[0]
        header.keyID = key.keyID
        let metaBytes = Self.encode(meta)
        let tagStart = TunnelHeader.size + 1 + metaBytes.count
        let total = tagStart + TunnelHeader.tagSize + inner.count
        precondition(output.count >= total, "an envelope needs \(total) bytes, has \(output.count)")
        header.encode(into: output)
        output[TunnelHeader.size] = UInt8(metaBytes.count)
        for (index, byte) in metaBytes.enumerated() { output[TunnelHeader.size + 1 + index] = byte }
        if !inner.isEmpty {
            UnsafeMutableRawBufferPointer(rebasing: output[(tagStart + TunnelHeader.tagSize)..<total]).copyMemory(
                from: inner
            )
        }
        let prefix = crypto.noncePrefix(header)
        Self.withAssociatedData(UnsafeRawBufferPointer(rebasing: output[0..<tagStart]), inner: inner) { associated in
            var empty: UInt8 = 0  // nothing is encrypted; libsodium wants a buffer all the same
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { nonce in
                TunnelCrypto.fillNonce(nonce, prefix: prefix, sequence: header.sequence)
                _ = crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
                    &empty,
                    (output.baseAddress! + tagStart).assumingMemoryBound(to: UInt8.self),  // !-safe, size checked
                    nil,
                    nil,
                    0,
                    associated.baseAddress!.assumingMemoryBound(to: UInt8.self),  // !-safe, never empty
                    UInt64(associated.count),
                    nil,
                    nonce.baseAddress!,  // !-safe, capacity 24
                    key.bytes
                )
            }
        }
        return total
    }

    /// Checks an envelope's tag and reads it; the inner datagram is left as it is.
    public static func open(
        _ datagram: UnsafeRawBufferPointer,
        crypto: inout TunnelCrypto
    ) throws(TunnelDropReason) -> RelayEnvelope {
        let header = try TunnelHeader.decode(datagram: datagram)
        guard Self.isEnvelope(header.kind), datagram.count > TunnelHeader.size else { throw .unknownKind }
        let metaLength = Int(datagram[TunnelHeader.size])
        let tagStart = TunnelHeader.size + 1 + metaLength
        guard datagram.count >= tagStart + TunnelHeader.tagSize else { throw .truncated }
        guard let key = crypto.subkeys.first(where: { $0.keyID == header.keyID }) else { throw .unknownKey }
        let innerOffset = tagStart + TunnelHeader.tagSize
        let inner = UnsafeRawBufferPointer(rebasing: datagram[innerOffset...])
        let prefix = crypto.noncePrefix(header)
        let rc = Self.withAssociatedData(UnsafeRawBufferPointer(rebasing: datagram[0..<tagStart]), inner: inner) {
            associated in
            var message: UInt8 = 0
            let ciphertext: UInt8 = 0  // empty: libsodium wants buffers all the same
            return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { nonce in
                TunnelCrypto.fillNonce(nonce, prefix: prefix, sequence: header.sequence)
                return withUnsafePointer(to: ciphertext) { ciphertext in
                    crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
                        &message,
                        nil,
                        ciphertext,
                        0,
                        (datagram.baseAddress! + tagStart).assumingMemoryBound(to: UInt8.self),  // !-safe, size checked
                        associated.baseAddress!.assumingMemoryBound(to: UInt8.self),  // !-safe, never empty
                        UInt64(associated.count),
                        nonce.baseAddress!,  // !-safe, capacity 24
                        key.bytes
                    )
                }
            }
        }
        guard rc == 0 else { throw .badTag }
        guard let meta = Self.decode(kind: header.kind, Array(datagram[(TunnelHeader.size + 1)..<tagStart])) else {
            throw .malformed
        }
        return RelayEnvelope(header: header, meta: meta, innerOffset: innerOffset)
    }

    /// Opens an envelope addressed to `me` from another peer, as a result (the shells read it inside a buffer's
    /// closure, where a typed throw cannot cross): the tag checked, then `misdirected` if the hop is not ours.
    public static func opened(
        _ datagram: UnsafeRawBufferPointer,
        for me: PeerID,
        crypto: inout TunnelCrypto
    ) -> Result<RelayEnvelope, TunnelDropReason> {
        do throws(TunnelDropReason) {
            let envelope = try Self.open(datagram, crypto: &crypto)
            guard envelope.header.destination == me, envelope.header.source != me else { return .failure(.misdirected) }
            return .success(envelope)
        } catch {
            return .failure(error)
        }
    }

    /// Calls `body` with the authenticated data: the envelope up to its tag, then the inner datagram's header and
    /// tag (what the inner's own tag already binds its payload to), or the whole inner when it is shorter.
    static func withAssociatedData<T>(
        _ envelope: UnsafeRawBufferPointer,
        inner: UnsafeRawBufferPointer,
        _ body: (UnsafeRawBufferPointer) -> T
    ) -> T {
        let whole = inner.count < TunnelHeader.size + TunnelHeader.tagSize
        let count = envelope.count + (whole ? inner.count : TunnelHeader.size + TunnelHeader.tagSize)
        return withUnsafeTemporaryAllocation(byteCount: count, alignment: 1) { buffer in
            UnsafeMutableRawBufferPointer(rebasing: buffer[0..<envelope.count]).copyMemory(from: envelope)
            if whole {
                UnsafeMutableRawBufferPointer(rebasing: buffer[envelope.count...]).copyMemory(from: inner)
            } else {
                let head = envelope.count
                UnsafeMutableRawBufferPointer(rebasing: buffer[head..<(head + TunnelHeader.size)]).copyMemory(
                    from: UnsafeRawBufferPointer(rebasing: inner[0..<TunnelHeader.size])
                )
                UnsafeMutableRawBufferPointer(rebasing: buffer[(head + TunnelHeader.size)...]).copyMemory(
                    from: UnsafeRawBufferPointer(rebasing: inner[(inner.count - TunnelHeader.tagSize)...])
                )
            }
            return body(UnsafeRawBufferPointer(buffer))
        }
    }

    static func encode(_ meta: Meta) -> [UInt8] {
        var bytes: [UInt8] = []
        func u64(_ value: UInt64) {
            for shift in stride(from: 56, through: 0, by: -8) {
                bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
            }
        }
        func string(_ value: String) {
            let utf8 = Array(value.utf8.prefix(64))
            bytes.append(UInt8(utf8.count))
            bytes += utf8
        }
        switch meta {
        case .forward(let target):
            u64(target.rawValue)
        case .forwarded(let origin, let observed):
            u64(origin.rawValue)
            string(observed)
        case .hello(let answer, let observed):
            bytes.append(answer ? 1 : 0)
            string(observed)
        }
        return bytes
    }

    static func decode(kind: TunnelHeader.Kind, _ bytes: [UInt8]) -> Meta? {
        var index = 0
        func u64() -> UInt64? {
            guard index + 8 <= bytes.count else { return nil }
            defer { index += 8 }
            return bytes[index..<index + 8].reduce(0) { $0 << 8 | UInt64($1) }
        }
        func string() -> String? {
            guard index < bytes.count else { return nil }
            let length = Int(bytes[index])
            guard index + 1 + length <= bytes.count else { return nil }
            defer { index += 1 + length }
            return String(decoding: bytes[(index + 1)..<(index + 1 + length)], as: UTF8.self)
        }
        let meta: Meta?
        switch kind {
        case .relay:
            meta = u64().map { .forward(target: PeerID(rawValue: $0)) }
        case .relayed:
            guard let origin = u64(), let observed = string() else { return nil }
            meta = .forwarded(origin: PeerID(rawValue: origin), observed: observed)
        case .relayHello:
            guard index < bytes.count, bytes[index] <= 1 else { return nil }
            let answer = bytes[index] == 1
            index += 1
            meta = string().map { .hello(answer: answer, observed: $0) }
        default:
            return nil
        }
        return index == bytes.count ? meta : nil
    }
}
