import Testing
import VNSnapCore

@Suite struct TunnelHeaderTests {
    let header = TunnelHeader(
        kind: .frame,
        vni: VNI(42)!,
        source: PeerID(name: "h1"),
        destination: PeerID(name: "h2"),
        session: 0x0102_0304_0506_0708,
        epoch: 7,
        keyID: 0xdead_beef,
        sequence: 99
    )

    private func decode(_ bytes: [UInt8]) throws(TunnelDropReason) -> TunnelHeader {
        let result: Result<TunnelHeader, TunnelDropReason> = bytes.withUnsafeBytes { raw in
            do throws(TunnelDropReason) { return .success(try TunnelHeader.decode(datagram: raw)) } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    @Test func test_encodeThenDecode_withTag_shouldRoundTrip() throws {
        let bytes = self.header.encoded + [UInt8](repeating: 0, count: TunnelHeader.tagSize)
        #expect(try self.decode(bytes) == self.header)
    }

    @Test func test_encode_shouldMatchDocumentedLayout() {
        let bytes = self.header.encoded
        #expect(bytes.count == 48)
        #expect(bytes[0] == 1)
        #expect(bytes[1] == 1)
        #expect(Array(bytes[4..<8]) == [0, 0, 0, 42])
        #expect(Array(bytes[24..<32]) == [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(Array(bytes[32..<36]) == [0, 0, 0, 7])
        #expect(Array(bytes[36..<40]) == [0xde, 0xad, 0xbe, 0xef])
        #expect(Array(bytes[40..<48]) == [0, 0, 0, 0, 0, 0, 0, 99])
    }

    @Test func test_decode_whenShorterThanHeaderPlusTag_shouldThrowTruncated() {
        for length in [0, 1, 47, 48, 63] {
            let bytes = Array((self.header.encoded + [UInt8](repeating: 0, count: 16)).prefix(length))
            #expect(throws: TunnelDropReason.truncated) { try self.decode(bytes) }
        }
    }

    @Test func test_decode_whenVersionUnknown_shouldThrowBadVersion() {
        var bytes = self.header.encoded + [UInt8](repeating: 0, count: 16)
        bytes[0] = 2
        #expect(throws: TunnelDropReason.badVersion) { try self.decode(bytes) }
    }

    @Test func test_decode_whenKindUnknown_shouldThrowUnknownKind() {
        var bytes = self.header.encoded + [UInt8](repeating: 0, count: 16)
        bytes[1] = 0x7f
        #expect(throws: TunnelDropReason.unknownKind) { try self.decode(bytes) }
    }

    @Test func test_decode_whenVNIPast24Bits_shouldThrowMalformed() {
        var bytes = self.header.encoded + [UInt8](repeating: 0, count: 16)
        bytes[4] = 1
        #expect(throws: TunnelDropReason.malformed) { try self.decode(bytes) }
    }

    @Test func test_decode_randomBytes_shouldNeverCrash() {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<10_000 {
            let length = Int(rng.next() % 200)
            var bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            if length > 1, rng.next() % 2 == 0 {
                bytes[0] = 1
                bytes[1] = 1
            }
            _ = try? self.decode(bytes)
        }
    }

    @Test func test_peerID_fromName_shouldBeStableFNV1a() {
        #expect(PeerID(name: "").rawValue == 0xcbf2_9ce4_8422_2325)
        #expect(PeerID(name: "a").rawValue == 0xaf63_dc4c_8601_ec8c)
        #expect(PeerID(name: "h1") != PeerID(name: "h2"))
    }

    @Test func test_macAddress_parseAndFormat_shouldRoundTrip() {
        let mac = MACAddress("52:54:00:AB:cd:0f")
        #expect(mac?.description == "52:54:00:ab:cd:0f")
        #expect(mac?.isMulticast == false)
        #expect(MACAddress("01:00:5e:00:00:01")?.isMulticast == true)
        #expect(MACAddress.broadcast.isMulticast)
        for bad in ["", "52:54:00:ab:cd", "52:54:00:ab:cd:0g", "525400abcd0f", "52:54:00:ab:cd:0f:00", "1:2:3:4:5:6"] {
            #expect(MACAddress(bad) == nil, "\(bad)")
        }
    }
}

/// A seeded generator so randomised tests replay exactly.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9e37_79b9_7f4a_7c15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
