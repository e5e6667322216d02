import Testing
import VNSnapCore
import VNSnapCrypto

/// Peer-to-peer stream encryption: what is sealed opens, in order, under the same key and context; anything
/// forged, reordered, replayed, cut off or under another key is refused.
@Suite struct StreamCipherTests {
    let key = SecretKey.generate()

    func stream(_ messages: [[UInt8]]) -> (header: [UInt8], sealed: [[UInt8]]) {
        var sealer = StreamSealer(key: self.key, context: "image")
        let sealed = messages.enumerated().map { sealer.seal($0.element, final: $0.offset == messages.count - 1) }
        return (sealer.header, sealed)
    }

    @Test func test_sealedMessages_openInOrder_andTheLastIsFinal() throws {
        let messages: [[UInt8]] = [Array("chunk 0".utf8), [], Array(repeating: 7, count: 4 << 20)]
        let (header, sealed) = self.stream(messages)
        #expect(header.count == StreamSealer.headerSize)
        #expect(try StreamOpener.keyID(ofHeader: header) == self.key.keyID)
        var opener = try StreamOpener(key: self.key, header: header, context: "image")
        for (index, message) in sealed.enumerated() {
            let opened = try opener.open(message)
            #expect(opened.message == messages[index])
            #expect(opened.final == (index == messages.count - 1))
        }
        #expect(throws: StreamCipherError.self) { try opener.open(sealed[0]) }
    }

    @Test func test_twoStreamsOfTheSameBytes_differ() {
        #expect(self.stream([[1, 2, 3]]).sealed != self.stream([[1, 2, 3]]).sealed)
    }

    @Test func test_flippedBit_reorderOrReplay_isRefused() throws {
        let (header, sealed) = self.stream([[1], [2], [3]])
        var flipped = sealed[0]
        flipped[flipped.count - 1] ^= 1
        var opener = try StreamOpener(key: self.key, header: header, context: "image")
        #expect(throws: StreamCipherError.self) { try opener.open(flipped) }
        opener = try StreamOpener(key: self.key, header: header, context: "image")
        #expect(throws: StreamCipherError.self) { try opener.open(sealed[1]) }
        opener = try StreamOpener(key: self.key, header: header, context: "image")
        _ = try opener.open(sealed[0])
        #expect(throws: StreamCipherError.self) { try opener.open(sealed[0]) }
        #expect(throws: StreamCipherError.self) { try opener.open([1, 2]) }
    }

    @Test func test_otherKeyOtherContextOrBadHeader_isRefused() throws {
        let (header, sealed) = self.stream([[1]])
        #expect(throws: StreamCipherError.self) {
            try StreamOpener(key: SecretKey.generate(), header: header, context: "image")
        }
        var other = try StreamOpener(key: self.key, header: header, context: "channel")
        #expect(throws: StreamCipherError.self) { try other.open(sealed[0]) }
        #expect(throws: StreamCipherError.self) {
            try StreamOpener(key: self.key, header: Array(header.prefix(10)), context: "image")
        }
    }
}
