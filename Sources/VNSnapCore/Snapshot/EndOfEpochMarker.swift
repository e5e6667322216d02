/// Sent on a tunnel once every VM of a VIOLIN on the sending peer is cut (DESIGN §6): it says how many
/// frames of the old epoch the sender put on this tunnel for that VIOLIN, so the receiver's `ChannelDrain`
/// knows when the channel is empty. The tunnel header carries the VNI and the new epoch; the payload is
/// `frames:u64`, sealed like a frame.
public struct EndOfEpochMarker: Sendable, Hashable {
    /// The VIOLIN.
    public var vni: VNI
    /// The epoch that began (the marker closes `epoch - 1`).
    public var epoch: UInt32
    /// Frames of the old epoch sent on this tunnel for this VIOLIN.
    public var frames: UInt64

    /// Creates a marker.
    public init(vni: VNI, epoch: UInt32, frames: UInt64) {
        self.vni = vni
        self.epoch = epoch
        self.frames = frames
    }

    /// The sealed payload.
    public var payload: [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: self.frames >> UInt64(56 - 8 * $0)) }
    }

    /// The marker in an opened datagram; `nil` unless the header is an end-of-epoch one with an 8-byte payload.
    public init?(header: TunnelHeader, payload: [UInt8]) {
        guard header.kind == .endOfEpoch, payload.count == 8, header.epoch > 0 else { return nil }
        self.vni = header.vni
        self.epoch = header.epoch
        self.frames = payload.reduce(0) { ($0 << 8) | UInt64($1) }
    }
}
