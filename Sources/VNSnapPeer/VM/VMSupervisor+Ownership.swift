import Logging
import Synchronization
import VNSnapCore
import VNSnapHypervisor

/// Ownership and the fence on the supervisor's side (issue 14): a VM another peer owns now is stopped here and
/// shown as moved; the fence pauses the running VMs and lifts them again.
extension VMSupervisor {
    /// Whether `vm` runs on another peer now (its ownership record names another owner): not this peer's to
    /// snapshot or restore.
    public func hasMoved(_ vm: String) -> Bool {
        self.entries.withLock { $0[vm]?.state == "moved" }
    }

    /// Stops this peer's copy of `vm` (if it runs): another peer owns it now (`record`); `status` says where.
    public func leave(_ vm: String, movedTo record: VMOwnership) async {
        let machine = self.entries.withLock { entries -> QEMUMachine? in
            guard let entry = entries[vm], entry.state != "moved" else { return nil }
            return entry.machine
        }
        self.markMoved(vm, record)
        await machine?.stop()
    }

    func markMoved(_ vm: String, _ record: VMOwnership) {
        let news = self.entries.withLock { $0[vm].map { $0.state != "moved" || $0.movedTo != record.summary } ?? false }
        guard news else { return }
        self.update(vm) {
            $0.state = "moved"
            $0.movedTo = record.summary
        }
        self.logger.notice(
            "VM runs on another peer",
            metadata: ["vm.name": "\(vm)", "vm.movedTo": "\(record.summary)"]
        )
    }

    /// The fence (issue 14): pauses every running VM, so a copy on a cut-off host does not run on beside one a
    /// restore started on the majority side.
    public func fence() async {
        for (name, machine) in self.running() {
            guard let monitor = await machine.monitor else { continue }
            do {
                _ = try await monitor.execute("stop", timeout: .seconds(5))
                self.update(name) { $0.fenced = true }
            } catch {
                self.logger.error(
                    "Could not pause a VM for the fence",
                    metadata: ["vm.name": "\(name)", "vm.error": "\(error)"]
                )
            }
        }
    }

    /// Lifts the fence: resumes the VMs it paused that still run here (the ones another peer owns now were stopped).
    public func unfence() async {
        for (name, machine) in self.running() where self.entries.withLock({ $0[name]?.fenced == true }) {
            _ = try? await machine.monitor?.execute("cont", timeout: .seconds(5))
            self.update(name) { $0.fenced = false }
        }
    }

    func running() -> [(String, QEMUMachine)] {
        let names = self.order.withLock { $0 }
        return self.entries.withLock { entries in
            names.compactMap { name in entries[name].flatMap { $0.state == "running" ? (name, $0.machine) : nil } }
        }
    }
}
