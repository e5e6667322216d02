import CVNSnapSys
import Foundation

/// Finds a VM's QEMU still running from an earlier run of the peer (issue 14: a crash or an upgrade leaves the VMs
/// running), and proves it is that VM before the peer takes it back.
///
/// The proof has three parts, each from the kernel rather than from files a crash may leave stale: the process
/// named in the VM's pid file holds that file's lock (QEMU locks its `-pidfile` for its lifetime, and the lock
/// dies with it), its command line names the VM, and it is the process serving the VM's QMP socket (the socket's
/// peer credentials). The caller then asks QMP `query-name` as well.
public enum QEMUProcessIdentity {
    /// Why a process found at a VM's paths is not that VM's QEMU.
    public struct Mismatch: Error, CustomStringConvertible {
        /// What did not match, for the operator.
        public var description: String
    }

    /// The process id of VM `name`'s QEMU if one still runs at `paths`; `nil` when none does (no pid file, or
    /// nobody holds its lock: the QEMU that wrote it is gone). Throws `Mismatch` when a live process there is
    /// not that VM's QEMU: starting another beside it would be wrong too.
    public static func find(name: String, paths: QEMUPaths) throws -> Int32? {
        guard let text = try? String(contentsOfFile: paths.pidFile, encoding: .utf8) else { return nil }
        let holder = vnsnap_lock_holder(paths.pidFile)
        guard holder > 0 else { return nil }
        guard let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid == holder else {
            throw Mismatch(
                description:
                    "\(paths.pidFile) says \"\(text.trimmingCharacters(in: .whitespacesAndNewlines))\" but process \(holder) holds its lock"
            )
        }
        let arguments = Self.commandLine(pid)
        // A QEMU started by an earlier build has no named threads; it is still this VM's.
        let expected = [QEMUCommandLine.nameArgument(name), "\(name),process=vnsnap-\(name)"]
        guard let flag = arguments.firstIndex(of: "-name"), flag + 1 < arguments.count,
            expected.contains(arguments[flag + 1])
        else {
            throw Mismatch(
                description: "process \(pid) holds \(paths.pidFile) but its command line does not name VM \(name)"
            )
        }
        let server = vnsnap_unix_server_pid(paths.qmpSocket)
        guard server == pid else {
            let why = server < 0 ? String(cString: strerror(errno)) : "process \(server) serves it"
            throw Mismatch(description: "VM \(name)'s QEMU (process \(pid)) does not serve \(paths.qmpSocket): \(why)")
        }
        return pid
    }

    /// The process holding the lock of the pid file at `path` (a live QEMU that wrote it), if any.
    public static func lockHolder(_ path: String) -> Int32? {
        let holder = vnsnap_lock_holder(path)
        return holder > 0 ? holder : nil
    }

    /// Whether process `pid` exists and has not exited (a zombie has).
    public static func isAlive(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        // The state follows the command name in parentheses: "pid (comm) S ...".
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first != "Z"
    }

    /// Process `pid`'s arguments, as `/proc` keeps them.
    static func commandLine(_ pid: Int32) -> [String] {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return [] }
        return data.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
    }
}
