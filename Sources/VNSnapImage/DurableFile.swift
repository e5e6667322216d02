import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Writes small files so that a crash leaves either the old or the new content, never a mix: a temporary
/// file in the same directory, fsync, rename over the target, fsync of the directory.
public enum DurableFile {
    /// Replaces `path` with `bytes` durably; the file gets `mode`.
    public static func write(_ bytes: [UInt8], to path: String, mode: mode_t = 0o600) throws {
        let directory = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let temporary = "\(path).tmp-\(getpid())"
        unlink(temporary)  // a leftover from a crash would keep its old mode
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw DurableFileError(path: temporary, operation: "create", errno: errno) }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, bytes.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                let error = DurableFileError(path: temporary, operation: "write", errno: errno)
                close(fd)
                unlink(temporary)
                throw error
            }
            written += n
        }
        if fsync(fd) != 0 {
            let error = DurableFileError(path: temporary, operation: "fsync", errno: errno)
            close(fd)
            unlink(temporary)
            throw error
        }
        if close(fd) != 0 {
            let error = DurableFileError(path: temporary, operation: "close", errno: errno)
            unlink(temporary)
            throw error
        }
        if rename(temporary, path) != 0 {
            let error = DurableFileError(path: path, operation: "rename", errno: errno)
            unlink(temporary)
            throw error
        }
        // The rename is durable only once the directory is.
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directoryFD >= 0 else { throw DurableFileError(path: directory, operation: "open", errno: errno) }
        defer { close(directoryFD) }
        guard fsync(directoryFD) == 0 else { throw DurableFileError(path: directory, operation: "fsync", errno: errno) }
    }
}

/// A durable write that failed, naming the file, the step and the system's reason.
public struct DurableFileError: Error, CustomStringConvertible {
    /// The file or directory.
    public var path: String
    /// The step that failed.
    public var operation: String
    /// The system's error number.
    public var errno: Int32

    public var description: String { "cannot \(self.operation) \(self.path): \(String(cString: strerror(self.errno)))" }
}
