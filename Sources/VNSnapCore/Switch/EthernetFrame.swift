/// The few fields of an Ethernet frame the switch reads.
public enum EthernetFrame {
    /// Destination and source MAC plus EtherType: the shortest frame the switch accepts.
    public static let headerSize = 14

    /// The destination and source addresses of `frame`, or `nil` for a runt.
    @inlinable
    public static func addresses(of frame: UnsafeRawBufferPointer) -> (destination: MACAddress, source: MACAddress)? {
        guard frame.count >= headerSize else { return nil }
        return (MACAddress(bytes: frame, offset: 0), MACAddress(bytes: frame, offset: 6))
    }
}
