import CSodium
import Foundation
import VNSnapCore

#if canImport(Glibc)
import Glibc
#endif

/// BLAKE2b-256 of a whole file, read in 1 MiB pieces (blocking: run it off event loops).
public enum FileDigest {
    /// The file's size and digest (lowercase hex); `label` names it in errors.
    public static func of(_ path: String, label: String) throws(ImageError) -> (bytes: UInt64, digest: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            throw ImageError(errno == ENOENT ? .missing : .io, "\(label): cannot open \(path): \(reason)")
        }
        defer { close(fd) }
        _ = sodium_init()
        // The state is 64-byte aligned, which Swift imports as opaque: allocate it by its size.
        let memory = UnsafeMutableRawPointer.allocate(byteCount: crypto_generichash_statebytes(), alignment: 64)
        defer { memory.deallocate() }
        let state = OpaquePointer(memory)
        _ = crypto_generichash_init(state, nil, 0, 32)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var total: UInt64 = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ImageError(.io, "\(label): cannot read \(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            _ = buffer.withUnsafeBufferPointer { crypto_generichash_update(state, $0.baseAddress, UInt64(n)) }
            total += UInt64(n)
        }
        var digest = [UInt8](repeating: 0, count: 32)
        _ = crypto_generichash_final(state, &digest, 32)
        return (total, digest.hexString)
    }
}
