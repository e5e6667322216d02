import CSodium
import VNSnapCore

/// Seals an image's chunks at rest (issue 18): XChaCha20-Poly1305 under the snapshot's own key, with the chunk's
/// place (snapshot, VM, image kind, index) as associated data, so a chunk cannot be read without the key, nor changed
/// or moved to another place unnoticed. Stored, a sealed chunk is `VNS1`, the cluster key's id (4 bytes, big
/// endian), a 24-byte random nonce, then the sealed zstd frame and its 16-byte tag. Chunks of snapshots written
/// before sealing (bare zstd frames) are read as they are when the cipher is told not to require sealing.
public struct ChunkCipher: Sendable {
    /// The bytes that mark a sealed chunk.
    public static let magic: [UInt8] = Array("VNS1".utf8)
    /// Header (magic, key id, nonce) and tag: what sealing adds to a chunk.
    public static let overhead = 4 + 4 + 24 + 16

    private let sealing: (id: UInt32, bytes: [UInt8])?
    private let opening: @Sendable (UInt32) -> [UInt8]?
    private let requireSealed: Bool
    private let context: [UInt8]

    /// A cipher for the chunks of `kind` of `vm` in `snapshot`: `sealing` seals new ones (nil: they are written
    /// unsealed), `opening` finds the key of a cluster key id, while that key is in the ring. With `requireSealed`
    /// an unsealed chunk is refused (only a snapshot written before sealing may have them).
    public init(
        snapshot: UInt64,
        vm: String,
        kind: ImageKind,
        sealing: (id: UInt32, bytes: [UInt8])?,
        opening: @escaping @Sendable (UInt32) -> [UInt8]?,
        requireSealed: Bool = true
    ) {
        _ = sodium_init()
        self.sealing = sealing
        self.opening = opening
        self.requireSealed = requireSealed
        self.context =
            Array("vnsnap/chunk/v1\u{0}".utf8) + withUnsafeBytes(of: snapshot.bigEndian) { Array($0) }
            + Array("\(vm)\u{0}\(kind.rawValue)\u{0}".utf8)
    }

    /// The key id a stored chunk was sealed under; `nil` for an unsealed one.
    public static func keyID(of stored: [UInt8]) -> UInt32? {
        guard stored.count >= Self.overhead, Array(stored.prefix(4)) == Self.magic else { return nil }
        return stored[4..<8].reduce(0) { ($0 << 8) | UInt32($1) }
    }

    /// `compressed`, sealed as chunk `index` (as it is when no sealing key was given).
    public func seal(_ compressed: [UInt8], index: Int) -> [UInt8] {
        guard let (id, key) = self.sealing else { return compressed }
        var nonce = [UInt8](repeating: 0, count: 24)
        randombytes_buf(&nonce, 24)
        let header = Self.magic + withUnsafeBytes(of: id.bigEndian) { Array($0) } + nonce
        let associated = self.associatedData(index: index, header: header)
        // One buffer, sealed in place after the header: a chunk is megabytes, and every copy of it costs.
        return [UInt8](unsafeUninitializedCapacity: 32 + compressed.count + 16) { buffer, count in
            _ = buffer.initialize(from: header)
            var length: UInt64 = 0
            _ = crypto_aead_xchacha20poly1305_ietf_encrypt(
                buffer.baseAddress! + 32,  // !-safe, allocated above
                &length,
                compressed,
                UInt64(compressed.count),
                associated,
                UInt64(associated.count),
                nil,
                nonce,
                key
            )
            count = 32 + Int(length)
        }
    }

    /// The zstd frame of stored chunk `index`: opened if sealed, as it is if not (unless sealing is required).
    public func open(_ stored: [UInt8], index: Int, label: String) throws(ImageError) -> [UInt8] {
        guard let id = Self.keyID(of: stored) else {
            guard !self.requireSealed else {
                throw ImageError(
                    .corrupt,
                    "\(label), chunk \(index): not sealed, though its snapshot was sealed at rest"
                )
            }
            return stored
        }
        guard let key = self.opening(id) else {
            throw ImageError(
                .corrupt,
                "\(label), chunk \(index): sealed with cluster key \(String(id, radix: 16)), which is not in the keyring"
            )
        }
        let header = Array(stored.prefix(32))
        let associated = self.associatedData(index: index, header: header)
        let nonce = Array(header[8..<32])
        var result: Int32 = -1
        let opened = [UInt8](unsafeUninitializedCapacity: stored.count - 32) { buffer, count in
            var length: UInt64 = 0
            result = stored.withUnsafeBufferPointer { sealed in
                crypto_aead_xchacha20poly1305_ietf_decrypt(
                    buffer.baseAddress,
                    &length,
                    nil,
                    sealed.baseAddress! + 32,  // !-safe, at least `overhead` bytes (keyID(of:) checked)
                    UInt64(sealed.count - 32),
                    associated,
                    UInt64(associated.count),
                    nonce,
                    key
                )
            }
            count = result == 0 ? Int(length) : 0
        }
        guard result == 0 else {
            throw ImageError(.corrupt, "\(label), chunk \(index): does not open (altered, moved, or another key)")
        }
        return opened
    }

    private func associatedData(index: Int, header: [UInt8]) -> [UInt8] {
        self.context + withUnsafeBytes(of: UInt64(index).bigEndian) { Array($0) } + header
    }
}
