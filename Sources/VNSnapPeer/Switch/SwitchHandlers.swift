import NIOCore
import VNSnapCore

/// Reads frames from one VM's port socket into the switch engine.
final class SwitchPortHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>

    private let engine: SwitchEngine
    private let port: PortID

    init(engine: SwitchEngine, port: PortID) {
        self.engine = engine
        self.port = port
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.engine.frameFromPort(self.port, frame: Self.unwrapInboundIn(data).data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.engine.flushPending()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A read error on a datagram socket loses one datagram, as a wire would; the port stays open.
        self.engine.portReadFailed(self.port)
    }
}

@available(*, unavailable)
extension SwitchPortHandler: Sendable {}

/// Reads sealed datagrams from the tunnel socket into the switch engine.
final class SwitchTunnelHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>

    private let engine: SwitchEngine

    init(engine: SwitchEngine) {
        self.engine = engine
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = Self.unwrapInboundIn(data)
        self.engine.datagramFromTunnel(envelope.data, from: envelope.remoteAddress)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.engine.flushPending()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.engine.tunnelWriteFailed()
    }
}

@available(*, unavailable)
extension SwitchTunnelHandler: Sendable {}
