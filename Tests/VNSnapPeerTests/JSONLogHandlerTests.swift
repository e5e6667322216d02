import Foundation
import Logging
import Synchronization
import Testing
import VNSnapPeer

/// `run --log-format json`: every record one JSON object on one line, metadata as fields.
@Suite struct JSONLogHandlerTests {
    static func capture(_ body: (Logger) -> Void) throws -> [[String: Any]] {
        let lines = Mutex<[String]>([])
        var logger = Logger(label: "vnsnap-peer") { label in
            JSONLogHandler(label: label) { line in lines.withLock { $0.append(line) } }
        }
        logger.logLevel = .debug
        logger[metadataKey: "peer.name"] = "h1"
        body(logger)
        return try lines.withLock { $0 }.map { line in
            #expect(line.hasSuffix("}\n") && line.dropLast().allSatisfy { $0 != "\n" }, "not one line: \(line)")
            return try #require(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        }
    }

    @Test func test_record_isOneJSONObjectPerLine_withMetadataAsFields() throws {
        let records = try Self.capture { logger in
            logger.warning(
                "Socket closed \"under\" the peer\nsecond line \u{01}",
                metadata: [
                    "socket": "membership", "snapshot.ids": .array(["1", "2"]),
                    "nested": .dictionary(["a": "b"]), "message": "collides",
                ]
            )
            logger.debug("quiet")
            logger.trace("not logged")
        }
        #expect(records.count == 2)
        let first = try #require(records.first)
        #expect(first["level"] as? String == "warning")
        #expect(first["label"] as? String == "vnsnap-peer")
        #expect(first["message"] as? String == "Socket closed \"under\" the peer\nsecond line \u{01}")
        #expect(first["socket"] as? String == "membership")
        #expect(first["peer.name"] as? String == "h1")
        #expect(first["snapshot.ids"] as? [String] == ["1", "2"])
        #expect((first["nested"] as? [String: String]) == ["a": "b"])
        #expect(first["metadata.message"] as? String == "collides")
        let time = try #require(first["time"] as? String)
        #expect(time.count == 24 && time.hasSuffix("Z"), "\(time)")
        let parsed = ISO8601DateFormatter()
        parsed.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let date = try #require(parsed.date(from: time))
        #expect(abs(date.timeIntervalSinceNow) < 60)
        #expect(records.last?["level"] as? String == "debug")
    }
}
