import ArgumentParser
import Foundation
import VNSnapCrypto

/// `vnsnap-peer keygen`: a new cluster key.
struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Print a new random cluster key (base64, one keyring line).",
        discussion: "Put the same keyring file on every peer: `vnsnap-peer keygen > /etc/vnsnap-peer/keyring`."
    )

    func run() throws {
        print(SecretKey.generate().base64)
    }
}
