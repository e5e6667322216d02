import Testing
import VNSnapCore
import VNSnapCrypto

@Suite struct PairKeysTests {
    let ring = Keyring(keys: [SecretKey(bytes: Array(repeating: 0x11, count: 32))!])!
    let payload: [UInt8] = Array("a frame between h1 and h2".utf8)

    func header(from source: String, to destination: String) -> TunnelHeader {
        TunnelHeader(
            kind: .frame,
            vni: VNI(42)!,
            source: PeerID(name: source),
            destination: PeerID(name: destination),
            session: 7,
            epoch: 0,
            keyID: 0,
            sequence: 1
        )
    }

    @Test func test_paired_bothSides_shouldDeriveKeysThatOpenEachOthersDatagrams() throws {
        let cluster = TunnelCrypto(keyring: self.ring, clusterName: "demo")
        let h1 = ExchangeKeyPair.generate()
        let h2 = ExchangeKeyPair.generate()
        var atH1 = try #require(cluster.paired(h1, with: h2.publicKey))
        var atH2 = try #require(cluster.paired(h2, with: h1.publicKey))
        let toH2 = atH1.sealed(header: self.header(from: "h1", to: "h2"), payload: self.payload)
        #expect(try atH2.opened(toH2).1 == self.payload)
        let toH1 = atH2.sealed(header: self.header(from: "h2", to: "h1"), payload: self.payload)
        #expect(try atH1.opened(toH1).1 == self.payload)
    }

    @Test func test_open_pairedDatagram_atARelayWithTheClusterRing_shouldThrowBadTag() throws {
        let cluster = TunnelCrypto(keyring: self.ring, clusterName: "demo")
        let h1 = ExchangeKeyPair.generate()
        let h2 = ExchangeKeyPair.generate()
        let relay = ExchangeKeyPair.generate()
        var atH1 = try #require(cluster.paired(h1, with: h2.publicKey))
        let datagram = atH1.sealed(header: self.header(from: "h1", to: "h2"), payload: self.payload)
        // The relay holds the ring and both public keys, and its own pairs with either side: none opens it.
        var ringOnly = cluster
        #expect(throws: TunnelDropReason.badTag) { try ringOnly.opened(datagram) }
        for side in [h1.publicKey, h2.publicKey] {
            var withSide = try #require(cluster.paired(relay, with: side))
            #expect(throws: TunnelDropReason.badTag) { try withSide.opened(datagram) }
        }
        // Nor does a datagram the ring alone sealed open between the pair: a relay cannot forge one either.
        var atH2 = try #require(cluster.paired(h2, with: h1.publicKey))
        let forged = ringOnly.sealed(header: self.header(from: "h1", to: "h2"), payload: self.payload)
        #expect(throws: TunnelDropReason.badTag) { try atH2.opened(forged) }
    }

    @Test func test_paired_anotherClusterRing_shouldNotOpenThePairsDatagrams() throws {
        let h1 = ExchangeKeyPair.generate()
        let h2 = ExchangeKeyPair.generate()
        var atH1 = try #require(TunnelCrypto(keyring: self.ring, clusterName: "demo").paired(h1, with: h2.publicKey))
        var otherCluster = try #require(
            TunnelCrypto(keyring: self.ring, clusterName: "other").paired(h2, with: h1.publicKey)
        )
        let datagram = atH1.sealed(header: self.header(from: "h1", to: "h2"), payload: self.payload)
        #expect(throws: TunnelDropReason.badTag) { try otherCluster.opened(datagram) }
    }

    @Test func test_paired_lowOrderOrShortPublicKey_shouldReturnNil() {
        let cluster = TunnelCrypto(keyring: self.ring, clusterName: "demo")
        let mine = ExchangeKeyPair.generate()
        #expect(cluster.paired(mine, with: [UInt8](repeating: 0, count: 32)) == nil)
        #expect(cluster.paired(mine, with: [1] + [UInt8](repeating: 0, count: 31)) == nil)
        #expect(cluster.paired(mine, with: Array(mine.publicKey.prefix(16))) == nil)
    }

    @Test func test_generate_twice_shouldGiveDifferentPublicKeys() {
        #expect(ExchangeKeyPair.generate().publicKey != ExchangeKeyPair.generate().publicKey)
    }
}
