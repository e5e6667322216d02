import Foundation
import Logging
import Synchronization
import Testing
import VNSnapCore

@testable import VNSnapHypervisor

#if canImport(Glibc)
import Glibc
#endif

/// `QEMUSnapshot.start` against a scripted QMP server on a real unix socket: QEMU's "Migration is not finalized
/// yet" (the previous migration's clean-up still pending) is retried, any other refusal is not.
@Suite(.serialized) struct QEMUSnapshotStartTests {
    /// What the scripted server received, and whether the client has gone.
    final class Received: Sendable {
        let state = Mutex<(commands: [String], done: Bool)>(([], false))

        /// The commands, once the client closed (polled: the server runs on a thread of its own).
        func commands() async -> [String] {
            while !self.state.withLock({ $0.done }) { try? await Task.sleep(for: .milliseconds(5)) }
            return self.state.withLock { $0.commands }
        }
    }

    /// Serves one QMP connection on a thread (blocking reads stay off the cooperative pool): the greeting, then for
    /// each command line the next scripted reply (capabilities first).
    static func serve(at path: String, replies: [String]) throws -> Received {
        unlink(path)
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0, listen(listener, 1) == 0 else { throw QMPError(.disconnected, "cannot listen at \(path)") }
        let received = Received()
        let thread = Thread {
            let fd = accept(listener, nil, nil)
            close(listener)
            defer {
                close(fd)
                received.state.withLock { $0.done = true }
            }
            func send(_ line: String) { _ = (line + "\n").withCString { write(fd, $0, strlen($0)) } }
            send(#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}"#)
            var pending = [UInt8]()
            var script = [#"{"return": {}}"#] + replies
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(fd, &buffer, buffer.count)
                guard n > 0 else { return }
                pending += buffer[0..<n]
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: pending[..<newline], as: UTF8.self)
                    received.state.withLock { $0.commands.append(line) }
                    pending.removeSubrange(...newline)
                    // Replies carry the command's id, as QEMU's do.
                    let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                    let id = (object?["id"] as? NSNumber)?.intValue ?? 0
                    let reply = script.isEmpty ? #"{"return": {}}"# : script.removeFirst()
                    send("{\"id\": \(id), " + reply.dropFirst())
                }
            }
        }
        thread.start()
        return received
    }

    static let notFinalized = #"{"error": {"class": "GenericError", "desc": "Migration is not finalized yet"}}"#

    @Test func test_start_whileThePreviousMigrationIsNotFinalized_retriesUntilQEMUTakesIt() async throws {
        let path = NSTemporaryDirectory() + "qmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        let server = try Self.serve(at: path, replies: [Self.notFinalized, Self.notFinalized, #"{"return": {}}"#])
        let client = try await QMPClient.connect(path: path, logger: Logger(label: "test"))
        try await QEMUSnapshot.start(client, uri: "unix:/nowhere")
        await client.close()
        let commands = await server.commands()
        #expect(commands.filter { $0.contains("\"migrate\"") }.count == 3, "\(commands)")
        unlink(path)
    }

    @Test func test_start_anotherRefusal_isThrownAtOnce() async throws {
        let path = NSTemporaryDirectory() + "qmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        let refusal = #"{"error": {"class": "GenericError", "desc": "There's a migration process in progress"}}"#
        let server = try Self.serve(at: path, replies: [refusal])
        let client = try await QMPClient.connect(path: path, logger: Logger(label: "test"))
        await #expect(throws: QMPError.self) { try await QEMUSnapshot.start(client, uri: "unix:/nowhere") }
        await client.close()
        #expect(await server.commands().filter { $0.contains("\"migrate\"") }.count == 1)
        unlink(path)
    }
}
