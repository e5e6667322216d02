import CZstd

/// zstd compression of one chunk at a time (DESIGN §7). Callers run it off the event loops.
public enum Zstd {
    /// Compresses `input` at `level` (1 is fast; images compress well even there).
    public static func compress(_ input: [UInt8], level: Int32 = 1) -> [UInt8] {
        let bound = ZSTD_compressBound(input.count)
        var output = [UInt8](repeating: 0, count: bound)
        let written = input.withUnsafeBytes { source in
            output.withUnsafeMutableBytes { destination in
                ZSTD_compress(destination.baseAddress, bound, source.baseAddress, input.count, level)
            }
        }
        // Compressing into a buffer of ZSTD_compressBound bytes cannot fail.
        precondition(ZSTD_isError(written) == 0, "zstd: \(String(cString: ZSTD_getErrorName(written)))")
        output.removeSubrange(written...)
        return output
    }

    /// The size a frame says it expands to (`compress` writes it), if it says.
    public static func contentSize(_ input: [UInt8]) -> Int? {
        let size = input.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, input.count) }
        // ZSTD_CONTENTSIZE_UNKNOWN and ZSTD_CONTENTSIZE_ERROR are the two largest values.
        guard size < UInt64.max - 1, size <= UInt64(Int.max) else { return nil }
        return Int(size)
    }

    /// Decompresses `input`, which must expand to exactly `rawSize` bytes.
    public static func decompress(_ input: [UInt8], rawSize: Int) throws(ImageError) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: rawSize)
        let written = input.withUnsafeBytes { source in
            output.withUnsafeMutableBytes { destination in
                ZSTD_decompress(destination.baseAddress, rawSize, source.baseAddress, input.count)
            }
        }
        guard ZSTD_isError(written) == 0 else {
            throw ImageError(.corrupt, "zstd: \(String(cString: ZSTD_getErrorName(written)))")
        }
        guard written == rawSize else { throw ImageError(.corrupt, "expands to \(written) bytes, not \(rawSize)") }
        return output
    }
}

/// An image or chunk that cannot be used, with what and why; compare by `code`.
public struct ImageError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of failure.
    public enum Code: String, Sendable, Hashable {
        /// A chunk's bytes do not match its hash, or do not decompress to its size.
        case corrupt
        /// A chunk file is not there.
        case missing
        /// The file system refused (full disk, permissions).
        case io
        /// A store has no room for a replica.
        case noRoom
    }

    /// The kind of failure.
    public var code: Code
    /// What exactly, naming the snapshot, VM and chunk where known.
    public var message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { self.message }
}
