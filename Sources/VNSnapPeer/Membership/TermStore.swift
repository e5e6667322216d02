import Foundation

/// The durable election term (DESIGN §5): the highest term this peer has seen, kept across restarts so a
/// restarted peer never accepts a lower one.
///
/// The file is two lines, `vnsnap-peer term v1` and the term in decimal. A file that is anything else is
/// refused, never overwritten: it may be the only record of the cluster's term.
public struct TermStore: Sendable {
    /// The file.
    public let path: String

    static let header = "vnsnap-peer term v1"

    /// Opens the store at `path`; a missing file means term 0.
    public init(path: String) {
        self.path = path
    }

    /// Reads the stored term: 0 if the file does not exist; throws if it exists and is not a term file.
    public func load() throws(TermStoreError) -> UInt64 {
        guard FileManager.default.fileExists(atPath: self.path) else { return 0 }
        guard let data = FileManager.default.contents(atPath: self.path) else {
            throw TermStoreError(path: self.path, message: "cannot be read")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw TermStoreError(path: self.path, message: "is not text")
        }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count == 3, lines[0] == Self.header, lines[2].isEmpty, let term = UInt64(lines[1]) else {
            throw TermStoreError(
                path: self.path,
                message: "is not a term file (expected \"\(Self.header)\" and a number)"
            )
        }
        return term
    }

    /// Stores `term` durably (write, fsync, rename).
    public func save(_ term: UInt64) throws {
        try DurableFile.write(Array("\(Self.header)\n\(term)\n".utf8), to: self.path)
    }
}

/// A term file that cannot be used; the peer refuses to start rather than guess the term.
public struct TermStoreError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The file.
    public var path: String
    /// What is wrong.
    public var message: String

    public var description: String {
        "election term file \(self.path) \(self.message); refusing to start. It holds the highest election term this "
            + "peer has seen; restore it, or remove it only if no snapshot protocol from an older term can still be running"
    }
}
