/// A VIOLIN: a named virtual L2 network with its VNI.
public struct Violin: Sendable, Hashable, Codable {
    /// Name, unique within the cluster.
    public var name: String
    /// Network identifier on the wire.
    public var vni: VNI
    /// The MTU its VMs' NICs announce to their guests (virtio's `host_mtu`); `nil` announces none (guests pick
    /// 1500). Small enough, no frame of theirs is fragmented on the way, relayed or not.
    public var mtu: Int?

    /// Smallest MTU a VIOLIN may announce (IPv6 needs 1280; IPv4 guests may go lower).
    public static let minimumMTU = 576
    /// Largest MTU a VIOLIN may announce (the switch carries frames up to 9216 bytes).
    public static let maximumMTU = 9000

    /// Creates a VIOLIN.
    public init(name: String, vni: VNI, mtu: Int? = nil) {
        self.name = name
        self.vni = vni
        self.mtu = mtu
    }
}

extension VNI: Codable {
    public init(from decoder: any Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(UInt32.self)
        guard let vni = VNI(raw) else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: "VNI \(raw) > 2^24-1")
            )
        }
        self = vni
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(self.rawValue)
    }
}
