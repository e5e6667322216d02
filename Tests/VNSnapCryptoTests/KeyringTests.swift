import Testing
import VNSnapCrypto

@Suite struct KeyringTests {
    let key1 = SecretKey.generate()
    let key2 = SecretKey.generate()

    @Test func test_parse_twoKeysWithCommentsAndBlanks_shouldMakeFirstPrimary() throws {
        let text = "# cluster keys\n\n\(key1.base64)\n  \(key2.base64)  \n"
        let keyring = try Keyring.parse(text, path: "keyring")
        #expect(keyring.keys == [key1, key2])
        #expect(keyring.primary == key1)
        #expect(keyring.key(id: key2.keyID) == key2)
    }

    @Test func test_parse_notBase64_shouldNameFileAndLine() {
        #expect(throws: KeyringError(path: "/k", line: 2, message: "not a base64-encoded 32-byte key")) {
            try Keyring.parse("\(key1.base64)\nnot base64!\n", path: "/k")
        }
    }

    @Test func test_parse_wrongLength_shouldNameLine() {
        // 16 bytes, valid base64.
        #expect(throws: KeyringError(path: "/k", line: 1, message: "not a base64-encoded 32-byte key")) {
            try Keyring.parse("AAAAAAAAAAAAAAAAAAAAAA==\n", path: "/k")
        }
    }

    @Test func test_parse_empty_shouldRefuse() {
        #expect(throws: KeyringError.self) { try Keyring.parse("# nothing\n\n", path: "/k") }
    }

    @Test func test_parse_duplicate_shouldRefuse() {
        #expect(throws: KeyringError.self) { try Keyring.parse("\(key1.base64)\n\(key1.base64)\n", path: "/k") }
    }

    @Test func test_base64_roundTrip_andFingerprintStable() {
        let again = SecretKey(base64: key1.base64)
        #expect(again == key1)
        #expect(again?.fingerprint == key1.fingerprint)
        #expect(key1.fingerprint.count == 64)
        #expect(!key1.description.contains(key1.base64))
    }
}
