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
            decode: { (bytes: [UInt8]) throws(ManifestError) in
                try SnapshotManifest.decode(Data(bytes), source: "fuzz")
            },
            encode: { Array(try $0.encoded()) }
        )
    }

    /// A keyring that parses is written (`fileText`) and parsed back as the same keyring.
    static func checkKeyring(_ bytes: [UInt8]) -> FuzzViolation? {
        Self.checkRoundTrip(
            bytes,
            decode: { (bytes: [UInt8]) throws(KeyringError) in
                try Keyring.parse(String(decoding: bytes, as: UTF8.self), path: "fuzz")
            },
            encode: { Array($0.fileText.utf8) }
        )
    }

    /// Any text is parsed and validated, or refused with a `ConfigError`; nothing else may happen.
    static func checkConfig(_ bytes: [UInt8]) -> FuzzViolation? {
        _ = try? PeerConfig.parse(String(decoding: bytes, as: UTF8.self), path: "fuzz.toml", baseDirectory: "/fuzz")
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

    /// Whether a text target's decoder takes the input.
    static func documentDecodes(_ target: FuzzTarget, _ bytes: [UInt8]) -> Bool {
        let text = String(decoding: bytes, as: UTF8.self)
        switch target {
        case .manifest: return (try? SnapshotManifest.decode(Data(bytes), source: "fuzz")) != nil
        case .keyring: return (try? Keyring.parse(text, path: "fuzz")) != nil
        case .config: return (try? PeerConfig.parse(text, path: "fuzz.toml", baseDirectory: "/fuzz")) != nil
        case .qmp: return (try? QMPMessage.decode(line: bytes)) != nil
        case .channel: return (try? ChannelLogFormat.decode(bytes, label: "fuzz")) != nil
        case .tunnel, .swim, .snapshot, .store, .stream: return target.decodes(bytes)
        }
    }
}
