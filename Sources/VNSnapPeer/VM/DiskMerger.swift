import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import VNSnapCore
import VNSnapHypervisor
import VNSnapImage

#if canImport(Glibc)
import Glibc
#endif

/// Merges the disk layers of deleted snapshots and removes the disk files nothing needs (DESIGN §6): the shell
/// of `DiskLayerPlan`, one step at a time, and only while no snapshot or restore runs here.
///
/// A layer under the file the VM writes to is copied in by a `block-stream` job on the running VM; one under a
/// layer no VM runs on, by `qemu-img rebase`. Both keep what the guest reads; both are checked against their
/// pins first (a damaged layer is not copied into a good one) and the rewritten file is pinned anew after.
actor DiskMerger {
    /// The names of this peer's block jobs.
    static let jobPrefix = "vnsnap-merge-"

    /// One VM's disk as the snapshot service sees it.
    struct VMDisk: Sendable {
        var name: String
        /// The configured disk (never removed or rewritten).
        var configured: VMDefinition.Disk
        /// Its monitor, when it runs.
        var monitor: QMPClient?
        /// The overlay recorded as the one it writes to (kept in any case; the file it writes to when it does not
        /// run).
        var recordedActive: String?
        /// The frozen images of its snapshots that exist (committed, here).
        var pinned: Set<String>
    }

    let layers: DiskLayers
    let logger: Logger
    private var passing = false
    /// A merge's copy, or the pinning after it, is under way.
    private var copying = false
    private let offline = NIOLockedValueBox<Int32?>(nil)
    /// Set by `yield`: the step under way stops, and no other starts in this pass.
    private let stop = NIOLockedValueBox(false)
    private var jobs = 0
    /// Merges refused (a missing or wrong digest), logged once each.
    private var refused: Set<String> = []

    init(layers: DiskLayers, logger: Logger) {
        self.layers = layers
        self.logger = logger
    }

    /// Plans and carries out steps for each VM until its chain is as short as it can be, or `idle` says a
    /// snapshot or restore has begun. Returns the steps taken. A pass already under way makes this one return 0.
    @discardableResult
    func pass(_ vms: [VMDisk], idle: @Sendable () async -> Bool) async -> Int {
        guard !self.passing else { return 0 }
        self.passing = true
        defer { self.passing = false }
        self.stop.withLockedValue { $0 = false }
        var steps = 0
        for vm in vms {
            // Each step changes the files; a bound keeps a file system that refuses deletes from looping.
            for _ in 0..<64 {
                guard await idle(), !self.stop.withLockedValue({ $0 }) else { return steps }
                do {
                    let (plan, chain, formats) = try await self.plan(vm)
                    guard let action = plan.actions.first else { break }
                    guard try await self.carryOut(action, vm: vm, running: chain, formats: formats) else { break }
                    steps += 1
                } catch  where self.stop.withLockedValue({ $0 }) {
                    self.logger.info(
                        "Disk merge stopped for a snapshot or restore; it goes on later",
                        metadata: ["vm.name": "\(vm.name)"]
                    )
                    return steps
                } catch {
                    self.logger.warning(
                        "Disk merge step failed; tried again later",
                        metadata: ["vm.name": "\(vm.name)", "error": "\(error)"]
                    )
                    break
                }
            }
        }
        return steps
    }

    /// Makes room for a snapshot or restore: a merge's copy under way is stopped (it starts again, from where
    /// it got to, on a later pass) and no other step starts; returns once no copy runs (within seconds).
    func yield() async {
        self.stop.withLockedValue { $0 = true }
        if let pid = self.offline.withLockedValue({ $0 }) { kill(pid, SIGTERM) }
        // A stopped copy ends within a poll; its file is pinned anew after (hashing it): 30 s at most.
        for _ in 0..<1_500 where self.copying {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// The VM's files as a plan, with the chain it runs on (empty when it does not run) and each file's format.
    private func plan(_ vm: VMDisk) async throws -> (DiskLayerPlan, [String], [String: String]) {
        var running: [String] = []
        if let monitor = vm.monitor {
            // A job of an earlier pass whose end this peer did not see (a monitor that stopped answering).
            if try await QEMUDisk.jobRuns(monitor, prefix: Self.jobPrefix) {
                throw SnapshotError(.refused, "a disk merge job of an earlier pass still runs")
            }
            running = try await QEMUDisk.chain(monitor).map(\.path)
        }
        let directory = self.layers.directory(vm.name)
        let (parents, formats) = try await NIOThreadPool.singleton.runIfActive {
            var parents: [String: String?] = [:]
            var formats: [String: String] = [:]
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            for name in names.sorted() where name.hasSuffix(".qcow2") {
                let chain = try QEMUDisk.chain(ofFile: "\(directory)/\(name)")
                for (index, file) in chain.enumerated() {
                    parents[file.path] = index + 1 < chain.count ? chain[index + 1].path : nil
                    formats[file.path] = file.format
                }
            }
            // A merge stopped between its copy and its new pin (the peer killed, QEMU not): settled now.
            try DiskPins.update(directory: directory) { pins in
                for (file, pin) in pins.pins where pin.merging != nil {
                    try pins.settle(file, format: formats[file] ?? pin.format, parent: parents[file] ?? nil)
                }
            }
            return (parents, formats)
        }
        let owned = Set(parents.keys.filter { $0.hasPrefix(directory + "/") && $0 != vm.configured.path })
        // The recorded overlay is kept even when the VM runs on another (a record for a configured disk since
        // changed, or not yet updated): it may hold the VM's newest writes.
        let plan = DiskLayerPlan(
            parents: parents,
            owned: owned,
            pinned: vm.pinned.union(vm.recordedActive.map { [$0] } ?? []),
            active: running.first ?? vm.recordedActive
        )
        return (plan, running, formats)
    }

    /// One step; `false` when it was refused (logged once) and the VM's other steps wait for another pass.
    private func carryOut(_ action: DiskLayerPlan.Action, vm: VMDisk, running: [String], formats: [String: String])
        async throws -> Bool
    {
        let directory = self.layers.directory(vm.name)
        switch action {
        case .remove(let file):
            try await NIOThreadPool.singleton.runIfActive {
                try DiskPins.update(directory: directory) { $0.pins[file] = nil }
                try FileManager.default.removeItem(atPath: file)
            }
            self.logger.info(
                "Disk file nothing needs removed",
                metadata: ["vm.name": "\(vm.name)", "disk.file": "\(file)"]
            )
            return true
        case .merge(let into, let dropping, let base):
            let started = ContinuousClock.now
            guard try await self.check(into: into, dropping: dropping, vm: vm.name) else { return false }
            // From here to the new pin, `yield` waits (it returned already if it came during the check).
            guard !self.stop.withLockedValue({ $0 }) else { return false }
            self.copying = true
            defer { self.copying = false }
            try await NIOThreadPool.singleton.runIfActive {
                try DiskPins.update(directory: directory) { pins in
                    pins.pins[into]?.merging = DiskPins.Merging(dropping: dropping, base: base)
                }
            }
            do {
                try await self.copy(into: into, base: base, vm: vm, running: running, formats: formats)
            } catch {
                // A job QEMU may still run (its monitor failed us): `into` stays marked until a pass sees it ended.
                if let monitor = vm.monitor, running.contains(into),
                    (try? await QEMUDisk.jobRuns(monitor, prefix: Self.jobPrefix)) != false
                {
                    throw error
                }
                // Stopped or failed part-way: `into` still rests where it did and reads the same, with some of the
                // copy in it; pinned as it is now (its layers were checked just before).
                try? await NIOThreadPool.singleton.runIfActive {
                    let now = try QEMUDisk.chain(ofFile: into)
                    try DiskPins.update(directory: directory) { pins in
                        try pins.settle(into, format: now[0].format, parent: now.count > 1 ? now[1].path : nil)
                    }
                }
                throw error
            }
            try await NIOThreadPool.singleton.runIfActive {
                // A stopped job or process ends without an error on some paths: the header says whether it is done.
                let now = try QEMUDisk.chain(ofFile: into)
                let done = now.count > 1 && now[1].path == base
                try DiskPins.update(directory: directory) { pins in
                    try pins.settle(into, format: now[0].format, parent: now.count > 1 ? now[1].path : nil)
                    if done { for file in dropping { pins.pins[file] = nil } }
                }
                guard done else { throw SnapshotError(.failed, "merging into \(into) stopped before it was done") }
                for file in dropping { try FileManager.default.removeItem(atPath: file) }
            }
            self.logger.notice(
                "Disk layers of deleted snapshots merged",
                metadata: [
                    "vm.name": "\(vm.name)", "disk.into": "\(into)", "disk.merged": "\(dropping.count)",
                    "disk.seconds": "\(started.duration(to: .now).inSeconds)",
                ]
            )
            return true
        }
    }

    /// Copies the layers below `into` down to `base` into it: on the running VM when it is in its chain, with
    /// `qemu-img` when no VM runs on it. `yield` stops either.
    private func copy(into: String, base: String, vm: VMDisk, running: [String], formats: [String: String])
        async throws
    {
        if let monitor = vm.monitor, running.contains(into) {
            self.jobs += 1
            let job = "\(Self.jobPrefix)\(self.jobs)"
            let stop = self.stop
            try await QEMUDisk.stream(monitor, into: into, base: base, job: job) { stop.withLockedValue { $0 } }
        } else {
            let baseDisk = VMDefinition.Disk(path: base, format: formats[base] ?? "qcow2")
            let (offline, stop) = (self.offline, self.stop)
            defer { offline.withLockedValue { $0 = nil } }
            try await NIOThreadPool.singleton.runIfActive {
                try QEMUDisk.rebase(into, onto: baseDisk) { pid in
                    offline.withLockedValue { $0 = pid }
                    if stop.withLockedValue({ $0 }) { kill(pid, SIGTERM) }
                }
            }
        }
    }

    /// Before a merge: every dropped file, and `into` when it is a frozen file, must match its pin (a damaged
    /// layer is not copied into a good one, and a merge's new pin must rest on checked bytes).
    private func check(into: String, dropping: [String], vm: String) async throws -> Bool {
        let directory = self.layers.directory(vm)
        let problem: String? = try await NIOThreadPool.singleton.runIfActive {
            let pins = try DiskPins.load(directory: directory)
            for file in dropping + (pins.pins[into] == nil ? [] : [into]) {
                guard let pin = pins.pins[file], pin.merging == nil else {
                    return "\(file) has no recorded digest (frozen by a build that kept none); it is kept as it is"
                }
                let found = try FileDigest.of(file, label: "VM \(vm), disk file")
                guard found.bytes == pin.bytes, found.digest == pin.digest else {
                    return "\(file) does not match its digest; not merged (a merge would copy the damage on)"
                }
            }
            return nil
        }
        guard let problem else { return true }
        if self.refused.insert("\(vm) \(into) \(dropping)").inserted {
            self.logger.error("Disk layers not merged", metadata: ["vm.name": "\(vm)", "reason": "\(problem)"])
        }
        return false
    }
}
