import Foundation
import VNSnapCore

/// A VM's disk at a cut (DESIGN §6): external qcow2 overlays taken over QMP while the VM is paused, so the disk
/// and the memory image belong to the same instant.
///
/// `blockdev-snapshot-sync` makes the running image read-only (it is the snapshot's disk from then on) and
/// sends the VM's writes to a new overlay on top of it. A restore starts the VM on a fresh overlay on top of
/// the frozen image, which stays untouched however often it is restored.
public enum QEMUDisk {
    /// On a paused VM: freezes its disk and continues it on a new qcow2 overlay at `overlay`.
    public static func freeze(_ monitor: QMPClient, overlay: String) async throws {
        _ = try await monitor.execute(
            "blockdev-snapshot-sync",
            arguments: [
                "device": .string(QEMUCommandLine.diskID),
                "snapshot-file": .string(overlay),
                "format": .string("qcow2"),
                "mode": .string("absolute-paths"),
            ],
            timeout: .seconds(10)
        )
    }

    /// The VM's disk as QEMU runs it: the active image first, then each backing file down to the base.
    public static func chain(_ monitor: QMPClient) async throws -> [VMDefinition.Disk] {
        let devices = try await monitor.execute("query-block")
        guard case .array(let list) = devices,
            let device = list.first(where: { $0["device"]?.stringValue == QEMUCommandLine.diskID }),
            var image = device["inserted"]?["image"]
        else { throw QMPError(.commandFailed, "query-block: no disk \(QEMUCommandLine.diskID)") }
        var chain: [VMDefinition.Disk] = []
        while true {
            guard let path = image["filename"]?.stringValue, let format = image["format"]?.stringValue else {
                throw QMPError(.commandFailed, "query-block: an image of \(QEMUCommandLine.diskID) without a file")
            }
            chain.append(VMDefinition.Disk(path: path, format: format))
            guard let backing = image["backing-image"] else { return chain }
            image = backing
        }
    }

    /// The backing chain of an image file, as `qemu-img info --backing-chain` reads it from the files: the file
    /// itself first (blocking: run it off event loops; `-U`, since a running QEMU may hold the files).
    public static func chain(ofFile path: String, qemuImg: String = "qemu-img") throws -> [VMDefinition.Disk] {
        let data = try Self.run(qemuImg, ["info", "-U", "--backing-chain", "--output=json", path], "info \(path)")
        guard let images = try? JSONDecoder().decode([[String: JSONValue]].self, from: data) else {
            throw QMPError(.commandFailed, "qemu-img info \(path): unreadable output")
        }
        return try images.map { image in
            guard let file = image["filename"]?.stringValue, let format = image["format"]?.stringValue else {
                throw QMPError(.commandFailed, "qemu-img info \(path): an image without a file name or format")
            }
            return VMDefinition.Disk(path: file, format: format)
        }
    }

    /// Creates a qcow2 overlay at `path` on top of `backing` (with `qemu-img`; blocking, so off event loops).
    public static func createOverlay(at path: String, on backing: VMDefinition.Disk, qemuImg: String = "qemu-img")
        throws
    {
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true
        )
        _ = try Self.run(
            qemuImg,
            ["create", "-q", "-f", "qcow2", "-b", backing.path, "-F", backing.format, path],
            "create \(path) on \(backing.path)"
        )
    }

    /// Runs `qemu-img` with `arguments` and returns its standard output; a failure throws with its message,
    /// `what` naming the operation.
    private static func run(_ qemuImg: String, _ arguments: [String], _ what: String) throws -> Data {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [qemuImg] + arguments
        let (output, errors) = (Pipe(), Pipe())
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        let message = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let text = String(decoding: message, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw QMPError(.commandFailed, "qemu-img \(what): \(text)")
        }
        return data
    }
}
