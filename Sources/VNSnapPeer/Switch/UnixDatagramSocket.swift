import CVNSnapSys
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// A bound unix datagram socket for a VM port, and the raw `sendto` the switch uses on it.
///
/// QEMU's `-netdev dgram` connects its socket to the port's path, so frames for the VM must come from
/// the port's own bound socket. NIO reads from it (it is handed over with `withBoundSocket`); sends are
/// plain non-blocking `sendto` calls on the event loop, because NIO's batched datagram writes do not
/// support unix addresses. A full VM queue drops the frame, as a real switch's full port queue does.
struct UnixDatagramSocket {
    /// Why a send did not go out.
    enum SendFailure: Error {
        /// The VM's socket queue is full (the VM is paused or slow).
        case queueFull
        /// The VM's socket does not exist or refuses (QEMU not running).
        case unreachable
    }

    /// Creates a non-blocking socket bound to `path`, replacing a stale file there.
    static func bind(path: String, receiveBuffer: Int32, sendBuffer: Int32) throws -> CInt {
        let fd = socket(
            AF_UNIX,
            Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
            0
        )
        guard fd >= 0 else { throw SocketError("socket(AF_UNIX): errno \(errno)") }
        unlink(path)
        var address = try Self.address(path)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            let error = errno
            close(fd)
            throw SocketError("bind \(path): errno \(error)")
        }
        var rcv = receiveBuffer
        var snd = sendBuffer
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, socklen_t(MemoryLayout<Int32>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, socklen_t(MemoryLayout<Int32>.size))
        return fd
    }

    /// Connects `fd` to the VM's NIC socket. QEMU's socket is connected to the port, so once the port is
    /// connected back the two are peers and the kernel's per-socket datagram limit (max_dgram_qlen, 10)
    /// no longer applies between them: only the send buffer does. Fails harmlessly while QEMU is not running.
    static func connect(fd: CInt, to target: inout sockaddr_un) -> Bool {
        withUnsafePointer(to: &target) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
            }
        }
    }

    /// Dissolves a connection made by `connect`, so datagrams from a new peer at the same path are accepted.
    static func disconnect(fd: CInt) {
        var unspecified = sockaddr()
        unspecified.sa_family = sa_family_t(AF_UNSPEC)
        _ = Glibc.connect(fd, &unspecified, socklen_t(MemoryLayout<sockaddr>.size))
    }

    /// The `sockaddr_un` of a path.
    static func address(_ path: String) throws -> sockaddr_un {
        try Self.addressAndLength(path).address
    }

    /// The `sockaddr_un` of a path and the length to pass with it; a path starting with `@` names an abstract
    /// socket (Linux: a leading NUL, and a length that counts only the name).
    static func addressAndLength(_ path: String) throws -> (address: sockaddr_un, length: socklen_t) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        let abstract = bytes.first == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw SocketError("unix socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return (address, socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1)))
    }

    /// Sends one datagram from `fd` to `target` without blocking.
    static func send(fd: CInt, to target: inout sockaddr_un, bytes: UnsafeRawBufferPointer) throws(SendFailure) {
        let sent = withUnsafePointer(to: &target) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(
                    fd,
                    bytes.baseAddress,
                    bytes.count,
                    Int32(MSG_DONTWAIT),
                    $0,
                    socklen_t(MemoryLayout<sockaddr_un>.size)
                )
            }
        }
        if sent >= 0 { return }
        switch errno {
        case EAGAIN, ENOBUFS: throw .queueFull
        default: throw .unreachable
        }
    }
}

extension UnixDatagramSocket {
    /// Sends `frames` in order from `fd` to `target` with one `sendmmsg` call per 64 frames.
    ///
    /// - Returns: how many were sent, and why the next one was not (if any was not).
    static func send(
        fd: CInt,
        to target: inout sockaddr_un,
        frames: ArraySlice<ByteBuffer>
    ) -> (sent: Int, failure: SendFailure?) {
        var storages: [Unmanaged<AnyObject>] = []
        storages.reserveCapacity(frames.count)
        var iovecs: [iovec] = []
        iovecs.reserveCapacity(frames.count)
        for frame in frames {
            frame.withUnsafeReadableBytesWithStorageManagement { bytes, storage in
                // Retained until the call returns: the pointers outlive this closure.
                storages.append(storage.retain())
                iovecs.append(
                    iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
                )
            }
        }
        defer { for storage in storages { storage.release() } }
        let count = min(iovecs.count, 64)
        let sent = withUnsafePointer(to: &target) { address in
            vnsnap_sendmmsg_unix(fd, iovecs, UInt32(count), address)
        }
        if sent >= 0 && Int(sent) == count { return (count, nil) }
        if sent > 0 { return (Int(sent), .queueFull) }
        switch errno {
        case EAGAIN, ENOBUFS: return (0, .queueFull)
        default: return (0, .unreachable)
        }
    }
}

/// A socket set-up failure.
struct SocketError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
