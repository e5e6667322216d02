import NIOCore
import VNSnapCore
import VNSnapCrypto

/// One end of an encrypted image-store connection (DESIGN §7): length-prefixed frames over TCP; each side
/// first sends its `StreamSealer` header (the store first), then sealed `StoreMessage`s, so each direction is
/// its own stream; the peer's stream key is bound to the store's header of this connection.
struct StoreConnection {
    /// The purpose both sides bind their stream keys to.
    static let context = "vnsnap-store/1"

    private var sealer: StreamSealer
    private var opener: StreamOpener
    private var inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>

    /// Which end of the connection this is.
    enum Side {
        /// Accepted the connection: sends its header first.
        case store
        /// Opened it: answers with a header whose key is bound to the store's (fresh) header, so a recorded
        /// session replayed later cannot be opened by the store.
        case peer
    }

    /// Exchanges headers (the store's first) under `key`, opening the other side's with the key it names.
    static func handshake(
        _ side: Side,
        inbound: NIOAsyncChannelInboundStream<ByteBuffer>,
        outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
        key: SecretKey,
        keys: (UInt32) -> SecretKey?
    ) async throws -> StoreConnection {
        var iterator = inbound.makeAsyncIterator()
        func receiveHeader() async throws -> ([UInt8], SecretKey) {
            guard let first = try await iterator.next() else {
                throw StoreError(.closed, "the connection closed before its header")
            }
            let header = Array(first.readableBytesView)
            let id = try StreamOpener.keyID(ofHeader: header)
            guard let theirs = keys(id) else {
                throw StoreError(
                    .unknownKey,
                    "the other side's stream is sealed under a key this keyring does not hold (id \(id))"
                )
            }
            return (header, theirs)
        }
        switch side {
        case .store:
            let sealer = StreamSealer(key: key, context: Self.context)
            try await outbound.write(ByteBuffer(bytes: sealer.header))
            let (header, theirs) = try await receiveHeader()
            let bound = Self.context + "/" + sealer.header.hexString
            let opener = try StreamOpener(key: theirs, header: header, context: bound)
            return StoreConnection(sealer: sealer, opener: opener, inbound: iterator, outbound: outbound)
        case .peer:
            let (header, theirs) = try await receiveHeader()
            let opener = try StreamOpener(key: theirs, header: header, context: Self.context)
            let sealer = StreamSealer(key: key, context: Self.context + "/" + header.hexString)
            try await outbound.write(ByteBuffer(bytes: sealer.header))
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
