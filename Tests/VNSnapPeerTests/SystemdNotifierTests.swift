import Foundation
import Testing

@testable import VNSnapPeer

#if canImport(Glibc)
import Glibc
#endif

/// sd_notify's protocol: one datagram of `KEY=VALUE` lines to `$NOTIFY_SOCKET`, a path or an abstract name.
@Suite struct SystemdNotifierTests {
    /// A bound unix datagram socket standing for systemd's; returns its fd.
    static func listen(_ name: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        let resolved = try UnixDatagramSocket.addressAndLength(name)
        var address = resolved.address
        let length = resolved.length
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        try #require(bound == 0, "bind \(name): \(String(cString: strerror(errno)))")
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    static func receive(_ fd: Int32) -> String {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(fd, &buffer, buffer.count, 0)
        return count > 0 ? String(decoding: buffer.prefix(count), as: UTF8.self) : ""
    }

    @Test(arguments: ["path", "abstract"])
    func test_notify_sendsTheFieldsAsOneDatagram(kind: String) throws {
        let name =
            kind == "path"
            ? NSTemporaryDirectory() + "vnsnap-notify-\(UInt32.random(in: 0...UInt32.max)).sock"
            : "@vnsnap-notify-\(UInt32.random(in: 0...UInt32.max))"
        let fd = try Self.listen(name)
        defer {
            close(fd)
            if kind == "path" { unlink(name) }
        }
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": name])
        try notifier.notify(["READY=1", "STATUS=joined: 3 members alive"])
        #expect(Self.receive(fd) == "READY=1\nSTATUS=joined: 3 members alive\n")
    }

    @Test func test_withoutNotifySocket_nothingIsSent_andAMissingSocketIsAnError() throws {
        try SystemdNotifier(environment: [:]).notify(["READY=1"])
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": ""]).socketPath == nil)
        let missing = SystemdNotifier(environment: ["NOTIFY_SOCKET": "/nonexistent/notify.sock"])
        #expect(throws: SystemdNotifierError.self) { try missing.notify(["READY=1"]) }
    }
}
