import NIOCore
import NIOPosix
import VNSnapCore

/// The snapshot steps of the switch (DESIGN §6), each run on the switch's event loop.
extension SwitchService {
    private func onLoop<T: Sendable>(_ body: @escaping @Sendable (SwitchEngine) -> T) async throws -> T {
        let engine = self.engine
        return try await self.group.next().submit { body(engine.value) }.get()
    }

    /// Calls `handler` (off the loop) whenever a frame of a new epoch triggers a VM's cut.
    public func onTrigger(_ handler: @escaping @Sendable (String) -> Void) async throws {
        try await self.onLoop { $0.onTrigger = handler }
    }

    /// Arms `vms` for a snapshot to `epoch`; returns the VMs refused, with why.
    public func arm(vms: [String], epoch: UInt32, policy: EpochGate.Policy, senders: Set<PeerID>) async throws
        -> [String: String]
    {
        try await self.onLoop { $0.arm(vms: vms, epoch: epoch, policy: policy, senders: senders) }
    }

    /// Measures `vms`' stall without arming them: for mode `loop`, or with `stallOnly` for `vnsnap-peer stall`.
    public func measure(vms: [String], stallOnly: Bool = false) async throws {
        try await self.onLoop { $0.measure(vms: vms, stallOnly: stallOnly) }
    }

    /// Ends a stall measurement of `vm`: its longest payload gap, or `nil` if a snapshot took the port over.
    public func finishMeasure(_ vm: String) async throws -> UInt64? {
        try await self.onLoop { $0.finishMeasure(vm) }
    }

    /// Holds `vm`'s inbound frames from now on (the cut begins).
    public func beginCut(_ vm: String) async throws {
        try await self.onLoop { $0.beginCut(vm) }
    }

    /// Reads what the stopped VM left in its port socket, as old-epoch frames; returns how many.
    public func drainOutbound(_ vm: String) async throws -> Int {
        try await self.onLoop { $0.drainOutbound(vm) }
    }

    /// `vm` is in the new epoch.
    public func finishCut(_ vm: String) async throws {
        try await self.onLoop { $0.finishCut(vm) }
    }

    /// `vm`'s cut failed: it stays in its epoch.
    public func cancelCut(_ vm: String) async throws {
        try await self.onLoop { $0.cancelCut(vm) }
    }

    /// Delivers `vm`'s held frames.
    public func releaseHeld(_ vm: String) async throws {
        try await self.onLoop { $0.releaseHeld(vm) }
    }

    /// Whether every channel into `vm`'s VIOLIN is drained.
    public func isDrained(_ vm: String) async throws -> Bool {
        try await self.onLoop { $0.isDrained(vm) }
    }

    /// What the switch measured and recorded for `vm`; measuring stops.
    public func snapshotReport(_ vm: String) async throws -> PortSnapshotReport? {
        try await self.onLoop { $0.snapshotReport(vm) }
    }

    /// The snapshot is over for `vms`: gates back to normal, logs forgotten.
    public func endSnapshot(vms: [String]) async throws {
        try await self.onLoop { $0.endSnapshot(vms: vms) }
    }

    /// A restore: `vm` starts in `epoch`.
    public func setEpoch(_ vm: String, epoch: UInt32) async throws {
        try await self.onLoop { $0.setEpoch(vm, epoch: epoch) }
    }

    /// A restore: the recorded channel state goes into `vm` first.
    public func inject(_ vm: String, frames: [[UInt8]]) async throws {
        try await self.onLoop { $0.inject(vm, frames: frames) }
    }

    /// Closes this peer's channels of a VIOLIN it has no VM of: end-of-epoch markers on every tunnel.
    public func sendMarkers(vni: VNI, epoch: UInt32) async throws {
        try await self.onLoop { $0.sendMarkers(vni: vni, epoch: epoch) }
    }

    /// The current epoch of every port, by VM.
    public func epochs() async throws -> [String: UInt32] {
        try await self.onLoop { engine in Dictionary(engine.ports.map { ($0.vm, $0.gate.epoch) }, uniquingKeysWith: max)
        }
    }
}
