import VNSnapCore
import VNSnapCrypto
import VNSnapHypervisor
import VNSnapImage

/// One decoder under fuzzing: what a peer parses from the network, its disk or its operator (issue 17).
///
/// `run` feeds it one input and checks more than "did not crash" where it can: a decoded message encodes
/// and decodes to itself, a datagram that opens was sealed with a key of the ring. A broken property comes
/// back as a `FuzzViolation`; the libFuzzer entry point turns it into a crash, the corpus tests into a failure.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// A tunnel datagram: header, then opened with the fuzzing keyring.
    case tunnel
    /// A membership (SWIM) message.
    case swim
    /// A snapshot protocol message.
    case snapshot
    /// A store protocol message.
    case store
    /// A store connection's encrypted stream: a stream header, then length-prefixed sealed frames.
    case stream
    /// A snapshot manifest (JSON).
    case manifest
    /// A keyring file.
    case keyring
    /// A peer configuration (TOML).
    case config
    /// One line from QEMU's monitor (QMP).
    case qmp
    /// A channel log's records.
    case channel

    /// Feeds one input; `nil` when every checked property held (a refused input is fine, a crash is not).
    public func run(_ bytes: [UInt8]) -> FuzzViolation? {
        switch self {
        case .tunnel: Self.checkTunnel(bytes)
        case .swim: Self.checkSWIM(bytes)
        case .snapshot: Self.checkSnapshot(bytes)
        case .store: Self.checkStore(bytes)
        case .stream: Self.checkStream(bytes)
        case .manifest: Self.checkManifest(bytes)
        case .keyring: Self.checkKeyring(bytes)
        case .config: Self.checkConfig(bytes)
        case .qmp: Self.checkQMP(bytes)
        case .channel: Self.checkChannel(bytes)
        }
    }

    /// Whether the input gets past the decoder (a datagram opens, a message decodes, a stream's first frame opens).
    public func decodes(_ bytes: [UInt8]) -> Bool {
        switch self {
        case .tunnel:
            var crypto = TunnelCrypto(keyring: Self.ring, clusterName: Self.clusterName)
            return (try? crypto.opened(bytes)) != nil
        case .swim: return (try? SWIMCodec.decode(bytes)) != nil
        case .snapshot: return (try? SnapshotCodec.decode(bytes)) != nil
        case .store: return (try? StoreCodec.decode(bytes)) != nil
        case .stream: return Self.openedMessages(bytes) > 0
        case .manifest: return (try? Self.decodeManifest(bytes)) != nil
        case .keyring: return (try? Self.parseKeyring(bytes)) != nil
        case .config: return (try? Self.parseConfig(bytes)) != nil
        case .qmp: return (try? QMPMessage.decode(line: bytes)) != nil
        case .channel: return (try? ChannelLogFormat.decode(bytes, label: "fuzz")) != nil
        }
    }

    /// The fuzzing cluster's keyring: two fixed keys, so sealed seeds open and a rotated key is tried too.
    static let ring: Keyring = {
        // !-safe: 32-byte keys, two of them, distinct.
        let keys = [UInt8(1), 2].map { seed in SecretKey(bytes: (0..<32).map { UInt8($0) &* 7 &+ seed })! }
        return Keyring(keys: keys, generation: 3)!
    }()

    /// The cluster name the fuzzing keyring's tunnel keys are bound to.
    static let clusterName = "fuzz"

    /// A decode → encode → decode round trip: the second decode must give the first's value.
    public static func checkRoundTrip<Value: Equatable, Failure: Error>(
        _ bytes: [UInt8],
        decode: ([UInt8]) throws(Failure) -> Value,
        encode: (Value) throws -> [UInt8]
    ) -> FuzzViolation? {
        guard let value = try? decode(bytes) else { return nil }
        let encoded: [UInt8]
        do {
            encoded = try encode(value)
        } catch {
            return FuzzViolation("a decoded value does not encode: \(error); value \(value)")
        }
        guard let again = try? decode(encoded) else {
            return FuzzViolation("a decoded value's encoding does not decode; value \(value)")
        }
        return again == value ? nil : FuzzViolation("round trip changed the value: \(value) became \(again)")
    }
}

/// A property of a decoder that did not hold for an input.
public struct FuzzViolation: Error, Sendable, CustomStringConvertible {
    /// What broke.
    public var description: String

    /// Creates a violation.
    public init(_ description: String) {
        self.description = description
    }
}
