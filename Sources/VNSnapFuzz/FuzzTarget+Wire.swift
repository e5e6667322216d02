import VNSnapCore
import VNSnapCrypto

/// The network decoders: tunnel datagrams, SWIM, snapshot and store messages, the store's encrypted stream.
extension FuzzTarget {
    /// The header decodes to what it encodes; a datagram that opens re-seals to the same bytes (so it was sealed
    /// with a key of the ring, under that header, with nothing appended or cut).
    static func checkTunnel(_ bytes: [UInt8]) -> FuzzViolation? {
        let header: TunnelHeader
        do {
            header = try bytes.withUnsafeBytes { raw throws(TunnelDropReason) in try TunnelHeader.decode(datagram: raw)
            }
        } catch {
            return nil
        }
        var expected = Array(bytes[..<TunnelHeader.size])
        expected[2] = 0  // reserved, ignored by the decoder and written as zero
        expected[3] = 0
        guard header.encoded == expected else {
            return FuzzViolation("header \(header) encodes to other bytes than it was decoded from")
        }
        var crypto = TunnelCrypto(keyring: Self.ring, clusterName: Self.clusterName)
        guard let (opened, payload) = try? crypto.opened(bytes) else { return nil }
        guard opened == header else { return FuzzViolation("the opened header \(opened) is not the decoded \(header)") }
        guard Self.ring.key(id: opened.keyID) != nil else {
            return FuzzViolation("a datagram opened under key \(opened.keyID), which the ring does not hold")
        }
        let resealed = crypto.sealed(header: opened, payload: payload, keyID: opened.keyID)
        return resealed == bytes ? nil : FuzzViolation("an opened datagram does not re-seal to itself")
    }

    static func checkSWIM(_ bytes: [UInt8]) -> FuzzViolation? {
        Self.checkRoundTrip(bytes, decode: SWIMCodec.decode, encode: SWIMCodec.encode)
    }

    static func checkSnapshot(_ bytes: [UInt8]) -> FuzzViolation? {
        Self.checkRoundTrip(bytes, decode: SnapshotCodec.decode, encode: SnapshotCodec.encode)
    }

    static func checkStore(_ bytes: [UInt8]) -> FuzzViolation? {
        Self.checkRoundTrip(bytes, decode: StoreCodec.decode, encode: StoreCodec.encode)
    }

    /// The stream as a store connection reads it after the key exchange: a header naming a key of the ring, then
    /// frames (`length:u16` big-endian, sealed bytes). Every message that opens round-trips as a store message;
    /// nothing opens after the stream's final message.
    static func checkStream(_ bytes: [UInt8]) -> FuzzViolation? {
        var violation: FuzzViolation?
        _ = Self.openStream(bytes) { message, afterFinal in
            if afterFinal {
                violation = FuzzViolation("a message opened after the stream's final one")
            } else {
                violation = Self.checkStore(message)
            }
            return violation == nil
        }
        return violation
    }

    /// How many of the stream's frames open.
    static func openedMessages(_ bytes: [UInt8]) -> Int {
        Self.openStream(bytes) { _, _ in true }
    }

    /// Opens the frames of a stream input in turn, handing each opened message to `body` (and whether the stream
    /// had ended before it) until `body` says stop; returns how many opened.
    private static func openStream(_ bytes: [UInt8], _ body: ([UInt8], Bool) -> Bool) -> Int {
        guard bytes.count >= StreamSealer.headerSize else { return 0 }
        let header = Array(bytes[..<StreamSealer.headerSize])
        guard let keyID = try? StreamOpener.keyID(ofHeader: header), let key = Self.ring.key(id: keyID),
            var opener = try? StreamOpener(key: key, header: header, context: Self.streamContext)
        else { return 0 }
        var offset = StreamSealer.headerSize
        var ended = false
        var opened = 0
        while offset + 2 <= bytes.count {
            let length = Int(bytes[offset]) << 8 | Int(bytes[offset + 1])
            offset += 2
            let frame = Array(bytes[offset..<min(bytes.count, offset + length)])
            offset += length
            guard let (message, final) = try? opener.open(frame) else { continue }
            opened += 1
            guard body(message, ended) else { break }
            ended = final
        }
        return opened
    }

    /// The context the fuzzing stream is bound to (a store connection binds its own to the key exchange).
    static let streamContext = "vnsnap/fuzz/stream"
}
