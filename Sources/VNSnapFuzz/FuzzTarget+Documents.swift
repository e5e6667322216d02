import VNSnapCore
import VNSnapCrypto
import VNSnapHypervisor
import VNSnapImage
import VNSnapPeer

import struct Foundation.Data

/// The decoders of files and lines: manifests, keyrings, configs, QMP replies, channel logs.
extension FuzzTarget {
    /// A manifest that decodes is stored (`encoded`) and read back as the same manifest.
    static func checkManifest(_ bytes: [UInt8]) -> FuzzViolation? {
        Self.checkRoundTrip(
            bytes,
            decode: Self.decodeManifest,
            encode: { Array(try $0.encoded()) }
        )
    }

    /// A keyring that parses is written (`fileText`) and parsed back as the same keyring.
    static func checkKeyring(_ bytes: [UInt8]) -> FuzzViolation? {
        Self.checkRoundTrip(
            bytes,
            decode: Self.parseKeyring,
            encode: { Array($0.fileText.utf8) }
        )
    }

    /// Any text is parsed and validated, or refused with a `ConfigError`; nothing else may happen.
    static func checkConfig(_ bytes: [UInt8]) -> FuzzViolation? {
        _ = try? Self.parseConfig(bytes)
        return nil
    }

    /// Any line is classified or refused with a `QMPError`; classifying twice gives the same message.
    static func checkQMP(_ bytes: [UInt8]) -> FuzzViolation? {
        let first = try? QMPMessage.decode(line: bytes)
        let second = try? QMPMessage.decode(line: bytes)
        return first == second ? nil : FuzzViolation("one QMP line decoded two ways: \(String(describing: first))")
    }

    /// Records that decode encode to the very bytes they came from (the format has one spelling).
    static func checkChannel(_ bytes: [UInt8]) -> FuzzViolation? {
        guard let frames = try? ChannelLogFormat.decode(bytes, label: "fuzz") else { return nil }
        return ChannelLogFormat.encode(frames) == bytes
            ? nil : FuzzViolation("\(frames.count) decoded records encode to other bytes")
    }

    /// The decoders the text targets run, each the one place its input is turned into a value.
    static func decodeManifest(_ bytes: [UInt8]) throws(ManifestError) -> SnapshotManifest {
        try SnapshotManifest.decode(Data(bytes), source: "fuzz")
    }

    static func parseKeyring(_ bytes: [UInt8]) throws(KeyringError) -> Keyring {
        try Keyring.parse(String(decoding: bytes, as: UTF8.self), path: "fuzz")
    }

    static func parseConfig(_ bytes: [UInt8]) throws(ConfigError) -> PeerConfig {
        try PeerConfig.parse(String(decoding: bytes, as: UTF8.self), path: "fuzz.toml", baseDirectory: "/fuzz")
    }
}
