import Logging
import VNSnapCore
import VNSnapCrypto
import VNSnapImage

/// A cluster-wide keyring change asked for with `vnsnap-peer keys`.
public enum KeyringChange: Sendable, Hashable, Codable {
    /// Install a new key (opens; the primary still seals).
    case install(base64: String)
    /// Make an installed key primary (named by base64 or fingerprint prefix).
    case use(key: String)
    /// Remove an installed key that is not primary.
    case remove(key: String)
}

extension MembershipEngine {
    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Keyring changes and their spread (serf's keys install/use/remove, plus anti-entropy)

    /// Applies a change here and sends the new keyring to every member at once; `syncKeyrings` keeps resending
    /// to members whose metadata shows an older keyring.
    func change(_ change: KeyringChange) throws(KeyringChangeError) -> Keyring {
        let next: Keyring
        let summary: String  // for the log: the fingerprint, never the key
        switch change {
        case .install(let base64):
            guard let key = SecretKey(base64: base64) else {
                throw KeyringChangeError("not a base64-encoded 32-byte key (make one with `vnsnap-peer keygen`)")
            }
            next = try self.keyring.installing(key)
            summary = "install of \(key.shortFingerprint) here"
        case .use(let reference):
            let key = try self.keyring.resolve(reference)
            next = try self.keyring.using(key)
            summary = "use of \(key.shortFingerprint) here"
        case .remove(let reference):
            let key = try self.keyring.resolve(reference)
            next = try self.keyring.removing(key)
            summary = "removal of \(key.shortFingerprint) here"
        }
        // Past any generation seen elsewhere, so this change wins over whatever is in flight.
        let newest = self.swim.otherMembers.map(\.state.metadata.keyringGeneration).max() ?? 0
        guard newest < UInt64.max else {
            throw KeyringChangeError("a member reports keyring generation \(newest): no higher one exists")
        }
        let raised = Keyring(keys: next.keys, generation: max(next.generation, newest + 1))!  // !-safe, same keys
        self.install(raised, reason: summary)
        let now = ContinuousClock.now
        for member in self.swim.otherMembers where member.state.status.isActive {
            self.sendKeyring(to: member.state.id, address: member.state.address, now: now, force: true)
        }
        self.flush()
        return raised
    }

    /// Adopts a keyring another peer sent, if it is newer than ours.
    func adopt(_ offered: Keyring, from sender: String) {
        guard self.keyring.isSuperseded(byGeneration: offered.generation, digest: offered.digest) else { return }
        self.install(offered, reason: "sent by \(sender)")
    }

    private func install(_ keyring: Keyring, reason: String) {
        do {
            try DurableFile.write(Array(keyring.fileText.utf8), to: self.keyringPath)
        } catch {
            // Keep going with the new keys (the cluster already uses them); a restart would start from the old
            // file and catch up again while an old key is still installed somewhere.
            self.logger.error("Cannot store the keyring", metadata: ["keyring.error": "\(error)"])
        }
        self.keyring = keyring
        self.crypto = TunnelCrypto(keyring: keyring, clusterName: self.clusterName, purpose: "membership")
        var metadata = self.swim.me.metadata
        metadata.keyringGeneration = keyring.generation
        metadata.keyringDigest = keyring.digest
        self.swim.updateMetadata(metadata)
        self.logger.notice(
            "Keyring changed",
            metadata: [
                "keyring.generation": "\(keyring.generation)", "keyring.primary": "\(keyring.primary.shortFingerprint)",
                "keyring.keys": "\(keyring.keys.count)", "keyring.reason": "\(reason)",
            ]
        )
        self.emit(.keyringChanged(keyring))
    }

    /// Resends our keyring, at most every 2 s per member, to members whose metadata shows an older one.
    func syncKeyrings(now: Instant) {
        for member in self.swim.otherMembers where member.state.status.isActive {
            let theirs = member.state.metadata
            guard (self.keyring.generation, self.keyring.digest) > (theirs.keyringGeneration, theirs.keyringDigest)
            else { continue }
            self.sendKeyring(to: member.state.id, address: member.state.address, now: now)
        }
    }

    /// Sends our keyring to `peer`, sealed with the key it last used if we still have it (a peer that missed
    /// `use` can open it); at most every 2 s per peer unless `force`d (a change just made).
    func sendKeyring(to peer: PeerID, address: String, now: Instant, force: Bool = false) {
        if !force, let sent = self.keyringSentAt[peer], sent.duration(to: now) < .seconds(2) { return }
        self.keyringSentAt[peer] = now
        self.sendSealed(kind: .keyring, payload: self.keyring.syncPayload, to: address, keyID: self.lastKeyID[peer])
    }
}
