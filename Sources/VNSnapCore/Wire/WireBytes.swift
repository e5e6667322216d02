/// Why an encoded message was refused (membership and snapshot codecs).
public enum WireFailure: String, Error, Sendable, Hashable, CaseIterable, Codable, CodingKeyRepresentable {
    /// Ends before a field does.
    case truncated
    /// A version this build does not speak.
    case badVersion
    /// An unknown message type, status or role bit.
    case malformed
    /// Bytes left over after the message.
    case trailingBytes
    /// Larger than `maximumSize` (on encoding), or a string longer than 255 bytes.
    case oversized
}

/// Big-endian writer of the binary wire formats.
struct WireWriter {
    var bytes: [UInt8] = []
    mutating func u8(_ value: UInt8) { self.bytes.append(value) }
    mutating func u32(_ value: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) {
            self.bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift)))
        }
    }
    mutating func u64(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) {
            self.bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
        }
    }
    mutating func string(_ value: String) throws(WireFailure) {
        let utf8 = Array(value.utf8)
        guard utf8.count <= 255 else { throw .oversized }
        self.u8(UInt8(utf8.count))
        self.bytes += utf8
    }
    mutating func blob(_ value: [UInt8]) {
        self.u32(UInt32(truncatingIfNeeded: value.count))
        self.bytes += value
    }
}

/// Big-endian reader of the binary wire formats; every read past the end throws `truncated`.
struct WireReader {
    let bytes: [UInt8]
    var offset = 0
    mutating func u8() throws(WireFailure) -> UInt8 {
        guard self.offset < self.bytes.count else { throw .truncated }
        defer { self.offset += 1 }
        return self.bytes[self.offset]
    }
    mutating func u32() throws(WireFailure) -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 { value = (value << 8) | UInt32(try self.u8()) }
        return value
    }
    mutating func u64() throws(WireFailure) -> UInt64 {
        var value: UInt64 = 0
        for _ in 0..<8 { value = (value << 8) | UInt64(try self.u8()) }
        return value
    }
    mutating func string() throws(WireFailure) -> String {
        let length = Int(try self.u8())
        guard self.offset + length <= self.bytes.count else { throw .truncated }
        defer { self.offset += length }
        guard let text = String(validating: self.bytes[self.offset..<self.offset + length], as: UTF8.self) else {
            throw .malformed
        }
        return text
    }
    mutating func blob() throws(WireFailure) -> [UInt8] {
        let length = Int(try self.u32())
        guard length <= self.bytes.count - self.offset else { throw .truncated }
        defer { self.offset += length }
        return Array(self.bytes[self.offset..<self.offset + length])
    }
}
