import Foundation
import Logging
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// Tells systemd (`Type=notify`) how the peer stands, by a datagram to `$NOTIFY_SOCKET` (sd_notify's protocol, no
/// libsystemd); without that variable it does nothing.
public struct SystemdNotifier: Sendable {
    /// The socket's path (`@` first: an abstract one), or `nil` when not started by systemd.
    public let socketPath: String?

    /// A notifier for `$NOTIFY_SOCKET` in `environment`.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.socketPath = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Sends `fields` (`READY=1`, `STATUS=…`, one per line); throws if the socket cannot be reached.
    public func notify(_ fields: [String]) throws {
        guard let path = self.socketPath else { return }
        guard let resolved = try? UnixDatagramSocket.addressAndLength(path) else {
            throw SystemdNotifierError(message: "NOTIFY_SOCKET \(path) is longer than a socket path can be")
        }
        var address = resolved.address
        let length = resolved.length
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemdNotifierError(message: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let message = Array((fields.joined(separator: "\n") + "\n").utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                message.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), address, length) }
            }
        }
        guard sent == message.count else {
            throw SystemdNotifierError(message: "NOTIFY_SOCKET \(path): \(String(cString: strerror(errno)))")
        }
    }
}

/// Why systemd could not be told.
public struct SystemdNotifierError: Error, CustomStringConvertible {
    /// What went wrong.
    public var message: String
    public var description: String { self.message }
}

/// Reports readiness to systemd once the peer has joined a member, or runs alone (no seeds, or none answered in
/// `aloneAfter`), and that it is stopping on graceful shutdown.
struct SystemdReadiness: Service {
    let notifier: SystemdNotifier
    let membership: MembershipService
    let hasSeeds: Bool
    let aloneAfter: Duration
    let logger: Logger

    func run() async throws {
        guard self.notifier.socketPath != nil else { return }
        let deadline = ContinuousClock.now + self.aloneAfter
        var status = "running alone (no seeds)"
        while self.hasSeeds, !Task.isCancelled {
            let alive = (try? await self.membership.view())?.alive.count ?? 1
            if alive > 1 {
                status = "joined: \(alive) members alive"
                break
            }
            if ContinuousClock.now >= deadline {
                status = "running alone: no seed answered yet (they are retried)"
                break
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        self.send(["READY=1", "STATUS=\(status)"])
        try? await gracefulShutdown()
        self.send(["STOPPING=1", "STATUS=stopping"])
    }

    private func send(_ fields: [String]) {
        do {
            try self.notifier.notify(fields)
        } catch {
            self.logger.warning("Cannot notify systemd", metadata: ["error": "\(error)"])
        }
    }
}
