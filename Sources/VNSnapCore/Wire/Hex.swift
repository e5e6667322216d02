extension Sequence<UInt8> {
    /// The bytes as lowercase hex, two digits each (fingerprints, hashes).
    public var hexString: String {
        self.map { byte in
            let hex = String(byte, radix: 16)
            return hex.count == 1 ? "0" + hex : hex
        }.joined()
    }
}
