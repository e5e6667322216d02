import Testing
import VNSnapCore
import VNSnapCrypto

/// The envelope a relay checks and forwards without opening what is inside (issue 15).
@Suite struct RelayEnvelopeTests {
    let key = SecretKey(bytes: Array(repeating: 0x33, count: 32))!

    func header(_ kind: TunnelHeader.Kind, from: String, to: String, sequence: UInt64) -> TunnelHeader {
        TunnelHeader(
            kind: kind,
            vni: VNI(42)!,
            source: PeerID(name: from),
            destination: PeerID(name: to),
            session: 9,
            epoch: 3,
            keyID: 0,
            sequence: sequence
        )
    }

    @Test func test_wrapThenOpen_keepsTheInnerDatagramAsIs_andTheInnerStillOpensAtItsDestination() throws {
        var crypto = TunnelCrypto(keyring: Keyring(keys: [self.key])!, clusterName: "demo")
        let inner = crypto.sealed(header: self.header(.frame, from: "a", to: "b", sequence: 7), payload: [1, 2, 3, 4])
        let metas: [RelayEnvelope.Meta] = [
            .forward(target: PeerID(name: "b")),
            .forwarded(origin: PeerID(name: "a"), observed: "203.0.113.7:40001"),
            .hello(answer: true, observed: "[2001:db8::1]:7946"),
        ]
        for meta in metas {
            let wrapped = inner.withUnsafeBytes {
                RelayEnvelope.wrap(
                    meta,
                    header: self.header(.relay, from: "a", to: "r", sequence: 8),
                    inner: $0,
                    crypto: &crypto
                )
            }
            let envelope = try wrapped.withUnsafeBytes { try RelayEnvelope.open($0, crypto: &crypto) }
            #expect(envelope.meta == meta)
            #expect(envelope.header.destination == PeerID(name: "r"))
            #expect(Array(wrapped[envelope.innerOffset...]) == inner)
            #expect(try crypto.opened(Array(wrapped[envelope.innerOffset...])).1 == [1, 2, 3, 4])
        }
    }

    @Test func test_open_aTamperedMetaOrSwappedInnerOrForeignKey_isRefused() throws {
        var crypto = TunnelCrypto(keyring: Keyring(keys: [self.key])!, clusterName: "demo")
        let inner = crypto.sealed(header: self.header(.frame, from: "a", to: "b", sequence: 7), payload: [1, 2, 3])
        let other = crypto.sealed(header: self.header(.frame, from: "a", to: "c", sequence: 9), payload: [1, 2, 3])
        let wrapped = inner.withUnsafeBytes {
            RelayEnvelope.wrap(
                .forward(target: PeerID(name: "b")),
                header: self.header(.relay, from: "a", to: "r", sequence: 8),
                inner: $0,
                crypto: &crypto
            )
        }
        var retargeted = wrapped
        retargeted[TunnelHeader.size + 8] ^= 1  // the target's last byte
        #expect(throws: TunnelDropReason.badTag) {
            try retargeted.withUnsafeBytes { try RelayEnvelope.open($0, crypto: &crypto) }
        }
        let offset = try wrapped.withUnsafeBytes { try RelayEnvelope.open($0, crypto: &crypto) }.innerOffset
        let swapped = Array(wrapped[..<offset]) + other
        #expect(throws: TunnelDropReason.badTag) {
            try swapped.withUnsafeBytes { try RelayEnvelope.open($0, crypto: &crypto) }
        }
        var foreign = TunnelCrypto(keyring: Keyring(keys: [self.key])!, clusterName: "other")
        #expect(throws: TunnelDropReason.badTag) {
            try wrapped.withUnsafeBytes { try RelayEnvelope.open($0, crypto: &foreign) }
        }
        #expect(throws: TunnelDropReason.truncated) {
            try Array(wrapped[..<(TunnelHeader.size + 10)]).withUnsafeBytes {
                try RelayEnvelope.open($0, crypto: &crypto)
            }
        }
    }
}
