import Testing
import VNSnapCore
import VNSnapCrypto
import VNSnapImage

/// Keys at rest follow the keyring: a snapshot sealed before a rotation opens while its key is in the ring.
@Suite struct AtRestKeysTests {
    @Test func test_rotation_oldSnapshotOpensWhileItsKeyIsInTheRing_newOnesSealWithTheNewPrimary() throws {
        let old = SecretKey.generate()
        let new = SecretKey.generate()
        let before = AtRestKeys(keyring: Keyring(keys: [old])!, clusterName: "c")
        let cipher = { (keys: AtRestKeys, snapshot: UInt64) in
            ChunkCipher(
                snapshot: snapshot,
                vm: "sink",
                kind: .memory,
                sealing: keys.sealing(snapshot: snapshot),
                opening: keys.opening(snapshot: snapshot)
            )
        }
        let sealed = cipher(before, 1).seal([1, 2, 3, 4], index: 0)
        #expect(ChunkCipher.keyID(of: sealed) == old.keyID)
        // Snapshots get keys of their own.
        #expect(before.sealing(snapshot: 1).bytes != before.sealing(snapshot: 2).bytes)
        #expect(throws: ImageError.self) { try cipher(before, 2).open(sealed, index: 0, label: "t") }
        // Another cluster's name derives other keys.
        let elsewhere = AtRestKeys(keyring: Keyring(keys: [old])!, clusterName: "d")
        #expect(throws: ImageError.self) { try cipher(elsewhere, 1).open(sealed, index: 0, label: "t") }

        // Rotated: the new key seals, the old one still opens.
        let rotated = AtRestKeys(keyring: Keyring(keys: [new, old])!, clusterName: "c")
        #expect(rotated.sealing(snapshot: 1).id == new.keyID)
        #expect(try cipher(rotated, 1).open(sealed, index: 0, label: "t") == [1, 2, 3, 4])
        // The old key removed: its snapshots no longer open, and the error says why.
        let removed = AtRestKeys(keyring: Keyring(keys: [new])!, clusterName: "c")
        #expect(throws: ImageError.self) { try cipher(removed, 1).open(sealed, index: 0, label: "t") }
    }
}
