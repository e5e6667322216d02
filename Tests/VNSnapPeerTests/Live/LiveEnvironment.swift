import Foundation
import Testing

/// Where the live tier finds the peer binary and the guest image (tools/test sets both).
enum LiveEnvironment {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    static var peerBinary: String {
        ProcessInfo.processInfo.environment["VNSNAP_PEER_BIN"] ?? repo + "/.build/debug/vnsnap-peer"
    }

    static var guestDirectory: String {
        ProcessInfo.processInfo.environment["VNSNAP_GUEST_DIR"] ?? repo + "/.guest"
    }

    /// Why the live tier cannot run here, or `nil` if it can. Missing parts are a failure, not a skip:
    /// tools/test always provides them.
    static var missing: String? {
        let fm = FileManager.default
        if getuid() != 0 { return "live tests need root (network namespaces, userfaultfd)" }
        if !fm.isExecutableFile(atPath: peerBinary) { return "no peer binary at \(peerBinary) (run swift build)" }
        for file in ["vmlinuz", "initrd.img"] where !fm.fileExists(atPath: guestDirectory + "/" + file) {
            return "no guest image in \(guestDirectory) (run tools/guest-build)"
        }
        return nil
    }

    /// The digest the sink must report for `blocks` blocks, from the same generator the guest runs.
    static func expectedDigest(blocks: Int, blockSize: Int = 1024) throws -> String {
        let output = try Shell.run([repo + "/Fixtures/guest/expected-digest", "\(blocks)", "\(blockSize)"])
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Runs commands for the live tier.
enum Shell {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Runs a command to completion and returns its standard output; throws on a non-zero exit.
    @discardableResult
    static func run(_ arguments: [String], allowFailure: Bool = false) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0].hasPrefix("/") ? arguments[0] : "/usr/bin/env")
        process.arguments = arguments[0].hasPrefix("/") ? Array(arguments.dropFirst()) : arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errors = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        if process.terminationStatus != 0 && !allowFailure {
            throw Failure(
                description: "\(arguments.joined(separator: " ")) exited \(process.terminationStatus): "
                    + String(decoding: errors, as: UTF8.self)
            )
        }
        return String(decoding: data, as: UTF8.self)
    }
}

extension LiveEnvironment {
    /// The load generator built next to the peer binary.
    static var benchBinary: String {
        (peerBinary as NSString).deletingLastPathComponent + "/vnsnap-bench"
    }
}
