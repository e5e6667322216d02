import Foundation
import VNSnapCore
import VNSnapImage

#if canImport(Glibc)
import Glibc
#endif

/// The digest of every frozen disk file of one VM, as this peer last wrote it (`data_dir/disks/VM/pins.json`).
///
/// A manifest pins a snapshot's frozen image and its backing chain as they were at the cut. Merging a deleted
/// snapshot's layer into the next one rewrites that file (and shortens the chains above it) without changing
/// what the guest reads, so the manifest's digests stop matching. The pins record each file's digest and parent
/// when it is frozen, and again after each merge; a restore checks a chain against them, and against the
/// manifest for files no merge rewrote. A merge first records which file it is rewriting (`merging`), so a
/// peer killed half-way finishes it rather than trusting a half-written file.
struct DiskPins: Sendable {
    /// One frozen file.
    struct Pin: Sendable, Hashable, Codable {
        var format: String
        var bytes: UInt64
        var digest: String
        /// The file it rests on, as its header names it.
        var parent: String?
        /// Whether a merge rewrote it since it was frozen (its manifest's digest is then outdated).
        var rewritten: Bool = false
        /// A merge into it under way: the files being copied in, and the file it will rest on.
        var merging: Merging?

        /// The file as a manifest lists it.
        func layer(_ path: String) -> SnapshotManifest.DiskLayer {
            .init(path: path, format: self.format, bytes: self.bytes, digest: self.digest)
        }
    }

    /// A merge that has begun and not been recorded as done.
    struct Merging: Sendable, Hashable, Codable {
        var dropping: [String]
        var base: String
    }

    /// The VM's directory of overlays.
    var directory: String
    var pins: [String: Pin]

    /// Reads the pins of `directory` (none when it has no file yet); an unreadable file throws, naming it.
    static func load(directory: String) throws -> DiskPins {
        let path = Self.path(directory)
        guard let data = FileManager.default.contents(atPath: path) else {
            return DiskPins(directory: directory, pins: [:])
        }
        do {
            return DiskPins(directory: directory, pins: try JSONDecoder().decode([String: Pin].self, from: data))
        } catch {
            throw SnapshotError(
                .failed,
                "\(path) is unreadable (\(error)); the digests of the VM's merged disk files are lost, so its snapshots' disks cannot be checked"
            )
        }
    }

    /// Reads, changes and writes the pins of `directory` under an exclusive lock (`pins.lock`), so a snapshot
    /// recording its newly frozen file and a merge recording a rewritten one do not lose each other's change.
    /// Blocking: off event loops.
    static func update<T>(directory: String, _ body: (inout DiskPins) throws -> T) throws -> T {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let descriptor = open("\(directory)/pins.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw SnapshotError(.failed, "\(directory)/pins.lock: \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        guard flock(descriptor, LOCK_EX) == 0 else {
            throw SnapshotError(.failed, "\(directory)/pins.lock: \(String(cString: strerror(errno)))")
        }
        var pins = try Self.load(directory: directory)
        let before = pins.pins
        let result = try body(&pins)
        if pins.pins != before { try pins.save() }
        return result
    }

    /// Writes them durably (fsync'd, replaced atomically).
    func save() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        try DurableFile.write(Array(try encoder.encode(self.pins)), to: Self.path(self.directory), mode: 0o644)
    }

    static func path(_ directory: String) -> String { "\(directory)/pins.json" }

    /// Pins `file` anew as it is now (hashing it: blocking), resting on `parent`, after a merge rewrote it, or
    /// stopped part-way through rewriting it; a file that is gone loses its pin. Only files already pinned are.
    mutating func settle(_ file: String, format: String, parent: String?) throws {
        guard self.pins[file] != nil else { return }
        guard FileManager.default.fileExists(atPath: file) else {
            self.pins[file] = nil
            return
        }
        let found = try FileDigest.of(file, label: "disk file \(file)")
        self.pins[file] = Pin(format: format, bytes: found.bytes, digest: found.digest, parent: parent, rewritten: true)
    }

    /// Checks a frozen image's chain (`chain`: the image first, then its backing files, as their headers name
    /// them) against the pins, hashing each file. Returns `false` when some file of it has no pin (taken before
    /// pins were kept: the manifest alone checks it); throws, naming the file, when one does not match.
    func check(_ chain: [VMDefinition.Disk], label: String) throws -> Bool {
        guard chain.allSatisfy({ self.pins[$0.path] != nil }) else { return false }
        for (index, file) in chain.enumerated() {
            let pin = self.pins[file.path]!  // !-safe, checked above
            guard pin.merging == nil else {
                throw SnapshotError(
                    .refused,
                    "\(label): its disk file \(file.path) is being merged with a deleted snapshot's layer; try again once that is done"
                )
            }
            let parent = index + 1 < chain.count ? chain[index + 1].path : nil
            guard pin.parent == parent else {
                throw ImageError(
                    .corrupt,
                    "\(label): disk file \(file.path) rests on \(parent ?? "nothing"), not on \(pin.parent ?? "nothing") as recorded"
                )
            }
            let found = try FileDigest.of(file.path, label: "\(label), disk file")
            guard found.bytes == pin.bytes, found.digest == pin.digest else {
                throw ImageError(
                    .corrupt,
                    "\(label): disk file \(file.path) does not match its digest (\(found.bytes) bytes, \(pin.bytes) recorded)"
                )
            }
        }
        return true
    }
}
