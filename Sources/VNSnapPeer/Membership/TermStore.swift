import Foundation
import VNSnapImage

/// A number kept durably across restarts that must never go down: the election term (DESIGN §5: a restarted
/// peer never accepts a lower term) and the peer's session (a restarted peer's datagrams must carry a higher
/// session than before, or every other peer drops them as stale).
///
/// The file is two lines, a header naming what it holds and the number in decimal. A file that is anything
/// else is refused, never overwritten: it may be the only record of that number.
public struct TermStore: Sendable {
    /// The file.
    public let path: String
    /// The header line.
    public let header: String
    /// What the number is and why it matters, for errors.
    public let purpose: String

    /// The election term's store.
    public init(path: String) {
        self.init(
            path: path,
            header: "vnsnap-peer term v1",
            purpose: "It holds the highest election term this peer has seen; restore it, or remove it only if no "
                + "snapshot protocol from an older term can still be running"
        )
    }

    /// A store of another number.
    public init(path: String, header: String, purpose: String) {
        self.path = path
        self.header = header
        self.purpose = purpose
    }

    /// The session store: sessions only go up, even if the wall clock went back between two runs.
    public static func session(path: String) -> TermStore {
        TermStore(
            path: path,
            header: "vnsnap-peer session v1",
            purpose: "It holds this peer's last session number; remove it only if the clock is known to be right"
        )
    }

    /// Reads the stored number: 0 if the file does not exist; throws if it exists and is not such a file.
    public func load() throws(TermStoreError) -> UInt64 {
        guard FileManager.default.fileExists(atPath: self.path) else { return 0 }
        guard let data = FileManager.default.contents(atPath: self.path) else {
            throw TermStoreError(path: self.path, message: "cannot be read", purpose: self.purpose)
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw TermStoreError(path: self.path, message: "is not text", purpose: self.purpose)
        }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count == 3, lines[0] == self.header, lines[2].isEmpty, let value = UInt64(lines[1]) else {
            throw TermStoreError(
                path: self.path,
                message: "is not a \(self.header) file (expected \"\(self.header)\" and a number)",
                purpose: self.purpose
            )
        }
        return value
    }

    /// Stores `value` durably (write, fsync, rename).
    public func save(_ value: UInt64) throws {
        try DurableFile.write(Array("\(self.header)\n\(value)\n".utf8), to: self.path)
    }

    /// The next session: above both the stored one and the clock, stored before it is returned.
    public func nextSession(now: UInt64) throws -> UInt64 {
        let stored = try self.load()
        let next = max(stored == UInt64.max ? stored : stored + 1, now)
        try self.save(next)
        return next
    }
}

/// A stored-number file that cannot be used; the peer refuses to start rather than guess.
public struct TermStoreError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The file.
    public var path: String
    /// What is wrong.
    public var message: String
    /// What the number is for.
    public var purpose: String

    public var description: String { "\(self.path) \(self.message); refusing to start. \(self.purpose)" }
}
