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

@Suite struct KeyringChangeTests {
    let old = SecretKey.generate()
    let new = SecretKey.generate()

    @Test func test_rotation_installUseRemove_raisesGenerationEachStep_andEndsWithOnlyTheNewKey() throws {
        let start = Keyring(keys: [old])!
        let installed = try start.installing(new)
        #expect(installed.primary == old)
        #expect(installed.generation == 1)
        let used = try installed.using(new)
        #expect(used.primary == new)
        #expect(used.keys.count == 2)
        let removed = try used.removing(old)
        #expect(removed.keys == [new])
        #expect(removed.generation == 3)
    }

    @Test func test_changes_thatWouldBreakTheCluster_areRefusedWithAReason() throws {
        let ring = Keyring(keys: [old])!
        #expect(throws: KeyringChangeError.self) { try ring.removing(old) }  // the primary
        #expect(throws: KeyringChangeError.self) { try ring.using(new) }  // not installed
        #expect(throws: KeyringChangeError.self) { try ring.installing(old) }  // already there
        #expect(throws: KeyringChangeError.self) { try ring.removing(new) }  // not installed
    }

    @Test func test_resolve_byBase64OrFingerprintPrefix_findsTheKey_andRefusesShortOrUnknown() throws {
        let ring = try Keyring(keys: [old])!.installing(new)
        #expect(try ring.resolve(new.base64) == new)
        #expect(try ring.resolve(String(new.fingerprint.prefix(10)).uppercased()) == new)
        #expect(throws: KeyringChangeError.self) { try ring.resolve(String(new.fingerprint.prefix(4))) }
        #expect(throws: KeyringChangeError.self) { try ring.resolve(SecretKey.generate().base64) }
    }

    @Test func test_fileText_keepsGeneration_andParsesBackEqual() throws {
        let ring = try Keyring(keys: [old])!.installing(new).using(new)
        let parsed = try Keyring.parse(ring.fileText, path: "k")
        #expect(parsed == ring)
        #expect(parsed.generation == 2)
        #expect(throws: KeyringError.self) { try Keyring.parse("# generation: x\n\(old.base64)\n", path: "k") }
    }

    @Test func test_digest_ignoresInstallOrder_butNotThePrimary() {
        let third = SecretKey.generate()
        let a = Keyring(keys: [old, new, third])!
        let b = Keyring(keys: [old, third, new])!
        let c = Keyring(keys: [new, old, third])!
        #expect(a.digest == b.digest)
        #expect(a.digest != c.digest)
        #expect(a.isSuperseded(byGeneration: 1, digest: 0))
        #expect(!a.isSuperseded(byGeneration: 0, digest: a.digest))
    }

    @Test func test_syncPayload_roundTrips_andRejectsEveryTruncationAndPadding() throws {
        let ring = try Keyring(keys: [old])!.installing(new)
        let bytes = ring.syncPayload
        #expect(Keyring(syncPayload: bytes) == ring)
        for length in 0..<bytes.count { #expect(Keyring(syncPayload: Array(bytes.prefix(length))) == nil) }
        #expect(Keyring(syncPayload: bytes + [0]) == nil)
        var badVersion = bytes
        badVersion[0] = 2
        #expect(Keyring(syncPayload: badVersion) == nil)
    }
}
