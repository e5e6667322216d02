/// A VIOLIN: a named virtual L2 network with its VNI.
public struct Violin: Sendable, Hashable, Codable {
    /// Name, unique within the cluster.
    public var name: String
    /// Network identifier on the wire.
    public var vni: VNI

    /// Creates a VIOLIN.
    public init(name: String, vni: VNI) {
        self.name = name
        self.vni = vni
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
