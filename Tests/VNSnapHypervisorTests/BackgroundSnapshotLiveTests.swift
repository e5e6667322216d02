import Foundation
import Testing
import VNSnapCore
import VNSnapHypervisor
import VNSnapImage

#if canImport(Glibc)
import Glibc
#endif

/// A real guest cut with QEMU's background snapshot: a short pause measured from QEMU's own STOP/RESUME
/// events, the RAM streamed into verified chunk files, and the guest running on.
@Suite(.serialized) struct BackgroundSnapshotLiveTests {
    @Test func test_backgroundSnapshot_ofARunningGuest_shortPause_imageVerified_guestRunsOn() async throws {
        guard getuid() == 0 else {
            Issue.record("background snapshots need /dev/userfaultfd (root); tools/test runs as root")
            return
        }
        guard let (directory, machine) = try QEMUMachineLiveTests().prepare() else { return }
        do {
            try await machine.start(stderrLog: directory + "/qemu.log")
            let monitor = try #require(await machine.monitor)
            try await Task.sleep(for: .seconds(2))  // let the guest get going: it is a live system that is cut
            let store = LocalChunkStore(directory: directory + "/image", label: "test snapshot, VM qmptest")
            try FileManager.default.createDirectory(atPath: store.directory, withIntermediateDirectories: true)
            let receiver = try ImageStreamWriter(
                socketPath: directory + "/image.sock",
                store: store,
                chunkSize: 1 << 20
            )

            try await QEMUSnapshot.enableBackgroundSnapshot(monitor)
            _ = try await monitor.execute("stop")
            try await QEMUSnapshot.start(monitor, uri: "unix:\(receiver.socketPath)")
            // QEMU's own STOP and RESUME times; a snapshot that never resumes the VM fails here, not hangs.
            let times = try await withThrowingTaskGroup(of: (Int64?, Int64?).self) { group in
                group.addTask {
                    // The stream buffers what arrives before this iterator exists.
                    var events = monitor.events.makeAsyncIterator()
                    var stop: Int64?
                    var resume: Int64?
                    while resume == nil, let event = await events.next() {
                        if event.name == "STOP" { stop = event.timestampMicroseconds }
                        if event.name == "RESUME" { resume = event.timestampMicroseconds }
                    }
                    return (stop, resume)
                }
                group.addTask {
                    try await Task.sleep(for: .seconds(30))
                    return (nil, nil)
                }
                defer { group.cancelAll() }
                return try await group.next() ?? (nil, nil)
            }
            let (stop, resume) = times
            try await QEMUSnapshot.waitCompleted(monitor)
            let chunks = try await receiver.wait(timeout: .seconds(60))

            let pause = try #require(resume) - (try #require(stop))
            #expect(pause >= 0)
            // Not a timing threshold: the pause is recorded so a failure shows it; the benchmark measures it.
            print(
                "background snapshot: paused \(pause) µs, \(chunks.count) chunks, raw \(chunks.reduce(0) { $0 + $1.rawBytes }) bytes, stored \(chunks.reduce(0) { $0 + $1.storedBytes })"
            )
            #expect(try await monitor.execute("query-status")["status"]?.stringValue == "running")
            #expect(!chunks.isEmpty)
            // Every chunk verifies and the stream is a QEMU migration stream ("QEVM").
            var stream: [UInt8] = []
            for chunk in chunks { stream += try store.read(chunk) }
            #expect(Array(stream.prefix(4)) == Array("QEVM".utf8))
            #expect(stream.count > 8 << 20, "a 128 MiB guest's image holds at least its touched RAM")
            await machine.stop()
        } catch {
            Issue.record("\(error)")
            await machine.stop()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The counter values a guest printed on its serial console so far.
    static func counters(_ log: String) -> [Int] {
        // Lossy decoding: a boot console may contain bytes that are not UTF-8.
        let text = FileManager.default.contents(atPath: log).map { String(decoding: $0, as: UTF8.self) } ?? ""
        // The console writes "\r\n", one Character in Swift: split on any newline.
        return text.split(whereSeparator: \.isNewline).compactMap { line in
            guard let range = line.range(of: "VNSNAP counter n=") else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }
    }

    @Test func test_restoreFromVerifiedChunks_startsPaused_thenContinuesWhereTheCutWas() async throws {
        guard getuid() == 0 else {
            Issue.record("background snapshots need /dev/userfaultfd (root); tools/test runs as root")
            return
        }
        guard let (directory, original) = try QEMUMachineLiveTests().prepare() else { return }
        let restoredDirectory = directory + "-restored"
        try FileManager.default.createDirectory(atPath: restoredDirectory, withIntermediateDirectories: true)
        let restored = QEMUMachineLiveTests().makeMachine(restoredDirectory)
        do {
            try await original.start(stderrLog: directory + "/qemu.log")
            let monitor = try #require(await original.monitor)
            let serial = directory + "/serial.log"
            let booted = ContinuousClock.now + .seconds(60)
            while Self.counters(serial).count < 5 {
                guard ContinuousClock.now < booted else { throw POSIXError(.ETIMEDOUT) }
                try await Task.sleep(for: .milliseconds(100))
            }
            let store = LocalChunkStore(directory: directory + "/image", label: "test snapshot, VM qmptest")
            try FileManager.default.createDirectory(atPath: store.directory, withIntermediateDirectories: true)
            let receiver = try ImageStreamWriter(
                socketPath: directory + "/image.sock",
                store: store,
                chunkSize: 1 << 20
            )
            try await QEMUSnapshot.enableBackgroundSnapshot(monitor)
            _ = try await monitor.execute("stop")
            let atCut = Self.counters(serial).last ?? 0
            try await QEMUSnapshot.start(monitor, uri: "unix:\(receiver.socketPath)")
            try await QEMUSnapshot.waitCompleted(monitor)
            let chunks = try await receiver.wait(timeout: .seconds(60))
            await original.stop()

            // A new QEMU, paused, takes its state from the chunks.
            try await restored.start(startPaused: true, incoming: true, stderrLog: restoredDirectory + "/qemu.log")
            let restoredMonitor = try #require(await restored.monitor)
            try await QEMUSnapshot.restore(restoredMonitor, uri: "unix:\(restoredDirectory)/incoming.sock")
            try ImageStreamFeeder.feed(chunks, from: store, to: restoredDirectory + "/incoming.sock")
            try await QEMUSnapshot.waitCompleted(restoredMonitor)
            #expect(try await restoredMonitor.execute("query-status")["status"]?.stringValue == "paused")
            _ = try await restoredMonitor.execute("cont")
            let restoredSerial = restoredDirectory + "/serial.log"
            let deadline = ContinuousClock.now + .seconds(20)
            while Self.counters(restoredSerial).count < 3, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            let after = Self.counters(restoredSerial)
            // It carries on from the cut: no reboot (no counter from 1), the next value after the cut's.
            #expect(
                after.first.map { $0 > 1 && abs($0 - (atCut + 1)) <= 2 } == true,
                "cut at \(atCut), restored printed \(after.prefix(5))"
            )
            #expect(after == Array((after.first ?? 0)..<(after.first ?? 0) + after.count), "\(after)")
        } catch {
            Issue.record("\(error)")
        }
        await original.stop()
        await restored.stop()
        try? FileManager.default.removeItem(atPath: directory)
        try? FileManager.default.removeItem(atPath: restoredDirectory)
    }
}
