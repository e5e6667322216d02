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

    /// Copies into `file` what it reads from its backing files above `base`, and makes it rest on `base`, with
    /// no VM running on it (`qemu-img rebase` in safe mode: the guest reads the same before and after; stopped
    /// half-way, the file still rests on its old backing file). Blocking: off event loops. `started` receives the
    /// process id, so the merge can be stopped.
    public static func rebase(
        _ file: String,
        onto base: VMDefinition.Disk,
        qemuImg: String = "qemu-img",
        started: @Sendable (Int32) -> Void = { _ in }
    ) throws {
        _ = try Self.run(
            qemuImg,
            ["rebase", "-f", "qcow2", "-b", base.path, "-F", base.format, file],
            "rebase \(file) onto \(base.path)",
            started: started
        )
    }

    /// On a running VM: copies into the layer `into` of its disk what it reads from the layers between it and
    /// `base`, then makes it rest on `base` (a `block-stream` job named `job`; the guest goes on meanwhile).
    /// Returns when the job has ended (a failed one throws); a job cancelled (as soon as `stop` says so) leaves
    /// `into` on its old backing file, which its header tells.
    public static func stream(
        _ monitor: QMPClient,
        into: String,
        base: String,
        job: String,
        stop: @Sendable () -> Bool = { false }
    ) async throws {
        let nodes = try await monitor.execute("query-named-block-nodes", arguments: ["flat": .bool(true)])
        var byFile: [String: String] = [:]
        for node in nodes.arrayValue ?? [] where node["drv"]?.stringValue != "file" {
            if let file = node["file"]?.stringValue, let name = node["node-name"]?.stringValue { byFile[file] = name }
        }
        guard let top = byFile[into], let bottom = byFile[base] else {
            throw QMPError(
                .commandFailed,
                "block-stream: \(byFile[into] == nil ? into : base) is not a layer of the VM's disk"
            )
        }
        _ = try await monitor.execute(
            "block-stream",
            arguments: [
                "job-id": .string(job), "device": .string(top), "base-node": .string(bottom),
                "auto-dismiss": .bool(false),
            ]
        )
        var cancelled = false
        while true {
            if !cancelled, stop() {
                cancelled = true
                await Self.cancel(monitor, job: job)
            }
            let jobs = try await monitor.execute("query-jobs")
            guard let state = (jobs.arrayValue ?? []).first(where: { $0["id"]?.stringValue == job }) else {
                throw QMPError(.commandFailed, "block-stream \(job): the job is gone")
            }
            if state["status"]?.stringValue == "concluded" {
                _ = try? await monitor.execute("job-dismiss", arguments: ["id": .string(job)])
                if let error = state["error"]?.stringValue {
                    throw QMPError(.commandFailed, "block-stream into \(into): \(error)")
                }
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Whether a job whose id starts with `prefix` runs on the VM (concluded ones are dismissed).
    public static func jobRuns(_ monitor: QMPClient, prefix: String) async throws -> Bool {
        var runs = false
        for job in try await monitor.execute("query-jobs").arrayValue ?? [] {
            guard let id = job["id"]?.stringValue, id.hasPrefix(prefix) else { continue }
            if job["status"]?.stringValue == "concluded" {
                _ = try? await monitor.execute("job-dismiss", arguments: ["id": .string(id)])
            } else {
                runs = true
            }
        }
        return runs
    }

    /// Cancels the block job `job` (a cancelled stream leaves its layer on its old backing file, reading the same).
    public static func cancel(_ monitor: QMPClient, job: String) async {
        _ = try? await monitor.execute("block-job-cancel", arguments: ["device": .string(job)])
    }

    /// Runs `qemu-img` with `arguments` and returns its standard output; a failure throws with its message,
    /// `what` naming the operation.
    private static func run(
        _ qemuImg: String,
        _ arguments: [String],
        _ what: String,
        started: @Sendable (Int32) -> Void = { _ in }
    ) throws -> Data {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [qemuImg] + arguments
        let (output, errors) = (Pipe(), Pipe())
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        started(process.processIdentifier)
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
