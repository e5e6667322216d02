import Foundation
import VNSnapCore

/// Where one QEMU instance keeps its sockets and logs.
public struct QEMUPaths: Sendable, Hashable {
    /// QMP unix socket QEMU listens on.
    public var qmpSocket: String
    /// Serial console log (the guest's ttyS0).
    public var serialLog: String
    /// Unix datagram socket QEMU binds for its NIC.
    public var nicSocket: String
    /// Unix datagram socket of the switch port the NIC sends to.
    public var switchPortSocket: String

    /// Creates the set of paths.
    public init(qmpSocket: String, serialLog: String, nicSocket: String, switchPortSocket: String) {
        self.qmpSocket = qmpSocket
        self.serialLog = serialLog
        self.nicSocket = nicSocket
        self.switchPortSocket = switchPortSocket
    }

    /// The directory its serial log (and, in the conventional layout, everything else) is in.
    public var directory: String {
        (self.serialLog as NSString).deletingLastPathComponent
    }

    /// QEMU's pid file (`-pidfile`), in the same directory: it finds the QEMU again after the peer restarts.
    public var pidFile: String {
        self.directory + "/qemu.pid"
    }

    /// The conventional layout under a VM's own directory.
    public init(vmDirectory: String, switchPortSocket: String) {
        self.init(
            qmpSocket: vmDirectory + "/qmp.sock",
            serialLog: vmDirectory + "/serial.log",
            nicSocket: vmDirectory + "/nic.sock",
            switchPortSocket: switchPortSocket
        )
    }
}

/// Builds `qemu-system-x86_64` arguments for a VM definition. Pure, so it is tested without QEMU.
public enum QEMUCommandLine {
    /// The block device name of a VM's disk in QMP (`blockdev-snapshot-sync`, `query-block`).
    public static let diskID = "disk0"

    /// QEMU's `-name` value for VM `name`: its process name, and named threads (`CPU 0/TCG`, `live_migration`, …)
    /// so `top -H` and `perf` tell a vCPU from QEMU's other threads.
    public static func nameArgument(_ name: String) -> String {
        "\(name),process=vnsnap-\(name),debug-threads=on"
    }

    /// Arguments for `definition`, with the accelerator already decided.
    ///
    /// The NIC is a `-netdev dgram` over unix datagram sockets (QEMU ≥ 7.2): one datagram, one frame,
    /// into the peer's switch port. `-S` starts the VM paused (restores resume the group together);
    /// `incoming` adds `-incoming defer`, so the state comes from `migrate-incoming` (a restore).
    public static func arguments(
        for definition: VMDefinition,
        accelerator: VMDefinition.Accelerator,
        paths: QEMUPaths,
        startPaused: Bool = false,
        incoming: Bool = false
    ) -> [String] {
        var args: [String] = [
            "-name", Self.nameArgument(definition.name),
            "-machine", "q35",
            "-accel", accelerator.rawValue,
            "-cpu", accelerator == .kvm ? "host" : "max",
            "-m", "\(definition.memoryMiB)",
            "-smp", "\(definition.vcpus)",
            "-nodefaults",
            "-no-user-config",
            "-display", "none",
            "-vga", "none",
            "-no-reboot",
            "-serial", "file:\(paths.serialLog)",
            "-pidfile", paths.pidFile,
            "-qmp", "unix:\(paths.qmpSocket),server=on,wait=off",
            "-netdev",
            "dgram,id=net0,local.type=unix,local.path=\(paths.nicSocket),remote.type=unix,remote.path=\(paths.switchPortSocket)",
            "-device",
            "virtio-net-pci,netdev=net0,mac=\(definition.mac),romfile="
                + (definition.mtu.map { ",host_mtu=\($0)" } ?? ""),
        ]
        if case .kernel(let kernel, let initrd, let append) = definition.boot {
            args += ["-kernel", kernel]
            if let initrd { args += ["-initrd", initrd] }
            args += ["-append", append]
        }
        // Without -kernel, the firmware boots from this disk.
        if let disk = definition.disk {
            args += ["-drive", "file=\(disk.path),format=\(disk.format),if=virtio,cache=writeback,id=\(Self.diskID)"]
        }
        if startPaused { args.append("-S") }
        if incoming { args += ["-incoming", "defer"] }
        return args
    }
}
