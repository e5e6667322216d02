import NIOCore
import VNSnapCore
import VNSnapCrypto

/// One end of an encrypted image-store connection (DESIGN §7): length-prefixed frames over TCP. The store first
/// sends a fresh X25519 public key; the peer answers with its own and its `StreamSealer` header; the store sends
/// its header; then sealed `StoreMessage`s, each direction its own stream. Stream keys mix the cluster key with
/// the two ends' Diffie-Hellman secret, so a relay that joins the connection (`SpliceRelay`), though it holds the
/// cluster's keys, cannot open it; and each is bound to the other side's fresh material, so a recorded session
/// replayed later opens nothing.
struct StoreConnection {
    /// The purpose both sides bind their stream keys to.
    static let context = "vnsnap-store/2"

    private var sealer: StreamSealer
    private var opener: StreamOpener
    private var inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>

    /// Which end of the connection this is.
    enum Side {
        /// Accepted the connection (or dialed a relay back): speaks first.
        case store
        /// Opened it.
        case peer
    }

    /// Exchanges keys and headers under `key`, opening the other side's with the key it names.
    static func handshake(
        _ side: Side,
        inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator,
        outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
        key: SecretKey,
        keys: (UInt32) -> SecretKey?
    ) async throws -> StoreConnection {
        var iterator = inbound
        func receive(_ what: String) async throws -> [UInt8] {
            guard let frame = try await iterator.next() else {
                throw StoreError(.closed, "the connection closed before its \(what)")
            }
            return Array(frame.readableBytesView)
        }
        func keyOf(_ header: [UInt8]) throws -> SecretKey {
            let id = try StreamOpener.keyID(ofHeader: header)
            guard let theirs = keys(id) else {
                throw StoreError(
                    .unknownKey,
                    "the other side's stream is sealed under a key this keyring does not hold (id \(id))"
                )
            }
            return theirs
        }
        func secret(_ mine: ExchangeKeyPair, _ theirs: [UInt8]) throws -> [UInt8] {
            guard let shared = mine.sharedSecret(with: theirs) else {
                throw StoreError(.failed, "the other side's exchange key is not a usable X25519 key")
            }
            return shared
        }
        let exchange = ExchangeKeyPair.generate()
        let size = ExchangeKeyPair.publicKeySize
        switch side {
        case .store:
            try await outbound.write(ByteBuffer(bytes: exchange.publicKey))
            let answer = try await receive("key and header")
            guard answer.count > size else {
                throw StoreError(.failed, "a short key and header (\(answer.count) bytes)")
            }
            let header = Array(answer[size...])
            let shared = try secret(exchange, Array(answer[..<size]))
            let opener = try StreamOpener(
                key: try keyOf(header),
                header: header,
                context: Self.context + "/" + exchange.publicKey.hexString,
                shared: shared
            )
            let sealer = StreamSealer(key: key, context: Self.context + "/" + header.hexString, shared: shared)
            try await outbound.write(ByteBuffer(bytes: sealer.header))
            return StoreConnection(sealer: sealer, opener: opener, inbound: iterator, outbound: outbound)
        case .peer:
            let theirs = try await receive("exchange key")
            let shared = try secret(exchange, theirs)
            let sealer = StreamSealer(key: key, context: Self.context + "/" + theirs.hexString, shared: shared)
            try await outbound.write(ByteBuffer(bytes: exchange.publicKey + sealer.header))
            let header = try await receive("header")
            let opener = try StreamOpener(
                key: try keyOf(header),
                header: header,
                context: Self.context + "/" + sealer.header.hexString,
                shared: shared
            )
            return StoreConnection(sealer: sealer, opener: opener, inbound: iterator, outbound: outbound)
        }
    }

    /// Sends one message.
    mutating func send(_ message: StoreMessage) async throws {
        try await self.outbound.write(ByteBuffer(bytes: self.sealer.seal(try StoreCodec.encode(message))))
    }

    /// The next message, or `nil` when the other side closed.
    mutating func receive() async throws -> StoreMessage? {
        guard let frame = try await self.inbound.next() else { return nil }
        let (plain, _) = try self.opener.open(Array(frame.readableBytesView))
        return try StoreCodec.decode(plain)
    }
}
