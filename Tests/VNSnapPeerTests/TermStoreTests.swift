import Foundation
import Testing
import VNSnapPeer

/// The durable election term: missing means 0, a stored term survives, anything else is refused untouched.
@Suite struct TermStoreTests {
    let directory = NSTemporaryDirectory() + "vnsnap-term-\(UUID().uuidString.prefix(8))"

    @Test func test_load_missingFile_isTermZero_andSaveThenLoad_returnsTheTerm() throws {
        defer { try? FileManager.default.removeItem(atPath: self.directory) }
        let store = TermStore(path: self.directory + "/membership/term")
        #expect(try store.load() == 0)
        try store.save(41)
        try store.save(42)
        #expect(try store.load() == 42)
        #expect(try String(contentsOfFile: store.path, encoding: .utf8) == "vnsnap-peer term v1\n42\n")
    }

    @Test(arguments: [
        "", "42\n", "vnsnap-peer term v1\n", "vnsnap-peer term v1\n-1\n", "vnsnap-peer term v1\n4 2\n",
        "vnsnap-peer term v2\n42\n", "vnsnap-peer term v1\n42\nextra\n",
    ])
    func test_load_corruptFile_isRefusedNamingTheFile_andLeftUntouched(content: String) throws {
        defer { try? FileManager.default.removeItem(atPath: self.directory) }
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        let path = self.directory + "/term"
        try content.write(toFile: path, atomically: true, encoding: .utf8)
        do {
            _ = try TermStore(path: path).load()
            Issue.record("accepted \(content.debugDescription)")
        } catch {
            #expect(error.description.contains(path))
            #expect(error.description.contains("refusing to start"))
            #expect(error.description.contains("election term"))
        }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == content)
    }

    @Test func test_nextSession_afterTheClockWentBack_isStillHigher() throws {
        defer { try? FileManager.default.removeItem(atPath: self.directory) }
        let store = TermStore.session(path: self.directory + "/session")
        let first = try store.nextSession(now: 1_000_000)
        #expect(first == 1_000_000)
        #expect(try store.nextSession(now: 5) == 1_000_001, "a clock that went back must not lower the session")
        #expect(try store.nextSession(now: 2_000_000) == 2_000_000)
    }
}
