import Foundation
import Testing
import VNSnapCore
import VNSnapCrypto

@Suite struct TunnelCryptoTests {
    let keyA = SecretKey(bytes: Array(repeating: 0x11, count: 32))!
    let keyB = SecretKey(bytes: Array(repeating: 0x22, count: 32))!
    let payload: [UInt8] = Array("an ethernet frame, more or less".utf8)

    func header(sequence: UInt64 = 1) -> TunnelHeader {
        TunnelHeader(
            kind: .frame,
            vni: VNI(42)!,
            source: PeerID(name: "h1"),
            destination: PeerID(name: "h2"),
            session: 1000,
            epoch: 0,
            keyID: 0,
            sequence: sequence
        )
    }

    @Test func test_sealThenOpen_sameKeyAndCluster_shouldRoundTrip() throws {
        var crypto = TunnelCrypto(keyring: Keyring(keys: [keyA])!, clusterName: "demo")
        let datagram = crypto.sealed(header: self.header(), payload: self.payload)
        #expect(datagram.count == self.payload.count + TunnelCrypto.overhead)
        let (header, opened) = try crypto.opened(datagram)
        #expect(opened == self.payload)
        #expect(header.keyID == self.keyA.keyID)
        #expect(header.sequence == 1)
    }

    @Test func test_open_withSecondaryKeyInstalled_shouldOpenWhatTheOldPrimarySealed() throws {
        var old = TunnelCrypto(keyring: Keyring(keys: [keyA])!, clusterName: "demo")
        var rotated = TunnelCrypto(keyring: Keyring(keys: [keyB, keyA])!, clusterName: "demo")
        #expect(try rotated.opened(old.sealed(header: self.header(), payload: self.payload)).1 == self.payload)
        // The old peer cannot open the new primary's datagrams until it installs the new key.
        let fromRotated = rotated.sealed(header: self.header(), payload: self.payload)
        #expect(throws: TunnelDropReason.unknownKey) { try old.opened(fromRotated) }
    }

    @Test func test_open_keyNotInstalled_shouldThrowUnknownKey() {
        var sender = TunnelCrypto(keyring: Keyring(keys: [keyB])!, clusterName: "demo")
        var receiver = TunnelCrypto(keyring: Keyring(keys: [keyA])!, clusterName: "demo")
        let datagram = sender.sealed(header: self.header(), payload: self.payload)
        #expect(throws: TunnelDropReason.unknownKey) { try receiver.opened(datagram) }
    }

    @Test func test_open_otherClusterName_shouldThrowBadTag() {
        var sender = TunnelCrypto(keyring: Keyring(keys: [keyA])!, clusterName: "other")
        var receiver = TunnelCrypto(keyring: Keyring(keys: [keyA])!, clusterName: "demo")
        let datagram = sender.sealed(header: self.header(), payload: self.payload)
        #expect(throws: TunnelDropReason.badTag) { try receiver.opened(datagram) }
    }

    @Test func test_open_anyFlippedBit_shouldThrow() {
        var crypto = TunnelCrypto(keyring: Keyring(keys: [keyA])!, clusterName: "demo")
        let datagram = crypto.sealed(header: self.header(), payload: self.payload)
        for index in 0..<datagram.count {
            var tampered = datagram
            tampered[index] ^= 0x01
            #expect(throws: TunnelDropReason.self) { try crypto.opened(tampered) }
        }
    }

    @Test func test_seal_distinctSequences_shouldUseDistinctNonces() {
        var crypto = TunnelCrypto(keyring: Keyring(keys: [keyA])!, clusterName: "demo")
        let first = crypto.sealed(header: self.header(sequence: 1), payload: self.payload)
        let second = crypto.sealed(header: self.header(sequence: 2), payload: self.payload)
        #expect(first[TunnelHeader.size...] != second[TunnelHeader.size...])
    }

    /// The sealed bytes of a fixed input never change: a wire-format regression check.
    @Test func test_seal_fixedVector_shouldMatchFixture() throws {
        let vector = try FixtureVector.load()
        let key = try #require(SecretKey(base64: vector.key))
        var crypto = TunnelCrypto(keyring: Keyring(keys: [key])!, clusterName: vector.cluster)
        let header = TunnelHeader(
            kind: .frame,
            vni: VNI(vector.vni)!,
            source: PeerID(name: vector.source),
            destination: PeerID(name: vector.destination),
            session: vector.session,
            epoch: vector.epoch,
            keyID: 0,
            sequence: vector.sequence
        )
        let sealed = crypto.sealed(header: header, payload: Array(hex: vector.payloadHex))
        #expect(sealed.hex == vector.datagramHex)
        #expect(try crypto.opened(Array(hex: vector.datagramHex)).1 == Array(hex: vector.payloadHex))
    }
}

struct FixtureVector: Decodable {
    var key: String
    var cluster: String
    var vni: UInt32
    var source: String
    var destination: String
    var session: UInt64
    var epoch: UInt32
    var sequence: UInt64
    var payloadHex: String
    var datagramHex: String

    static func load() throws -> FixtureVector {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let data = try Data(contentsOf: root.appendingPathComponent("Fixtures/wire/tunnel-frame-v1.json"))
        return try JSONDecoder().decode(FixtureVector.self, from: data)
    }
}

extension Array where Element == UInt8 {
    init(hex: String) {
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        self = bytes
    }

    var hex: String { self.map { String(format: "%02x", $0) }.joined() }
}
