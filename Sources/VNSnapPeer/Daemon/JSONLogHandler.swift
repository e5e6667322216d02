import Foundation
import Logging

/// Log records as one JSON object per line (`run --log-format json`): `time`, `level`, `label`, `message`, `source`,
/// then each metadata key as a field of its own (a key that would overwrite one of those gets a `metadata.` prefix).
public struct JSONLogHandler: LogHandler {
    /// Where whole lines go.
    public typealias Output = @Sendable (String) -> Void

    /// The record's own fields, which metadata may not overwrite.
    static let reserved: Set<String> = ["time", "level", "label", "message", "source", "file", "line", "function"]

    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let output: Output

    /// A handler writing to `output` (by default standard error, one `write` per line).
    public init(
        label: String,
        metadataProvider: Logger.MetadataProvider? = nil,
        output: @escaping Output = Self.standardError
    ) {
        self.label = label
        self.metadataProvider = metadataProvider
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields = self.metadata
        if let provided = self.metadataProvider?.get() { fields.merge(provided) { _, new in new } }
        if let metadata = event.metadata { fields.merge(metadata) { _, new in new } }
        if let error = event.error, fields["error"] == nil { fields["error"] = "\(error)" }
        var line = "{\"time\":\(Self.string(Self.timestamp()))"
        line += ",\"level\":\(Self.string(event.level.rawValue))"
        line += ",\"label\":\(Self.string(self.label))"
        line += ",\"message\":\(Self.string(event.message.description))"
        line += ",\"source\":\(Self.string(event.source))"
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            let name = Self.reserved.contains(key) ? "metadata.\(key)" : key
            line += ",\(Self.string(name)):\(Self.json(value))"
        }
        self.output(line + "}\n")
    }

    /// Writes a line to standard error in one call, so lines of concurrent records never interleave.
    public static let standardError: Output = { line in
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Foundation.write(2, buffer.baseAddress! + offset, buffer.count - offset)
                guard written > 0 else { return }
                offset += written
            }
        }
    }

    private static func json(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): return Self.string(text)
        case .stringConvertible(let value): return Self.string(value.description)
        case .array(let values): return "[" + values.map(Self.json).joined(separator: ",") + "]"
        case .dictionary(let values):
            let members = values.sorted { $0.key < $1.key }.map { "\(Self.string($0.key)):\(Self.json($0.value))" }
            return "{" + members.joined(separator: ",") + "}"
        }
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped.
    static func string(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }

    /// Now, UTC, with milliseconds: `2026-12-05T21:00:00.123Z`.
    private static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var time = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &time)
        let millis = now.tv_nsec / 1_000_000
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(time.tm_year + 1900, 4))-\(pad(time.tm_mon + 1, 2))-\(pad(time.tm_mday, 2))T"
            + "\(pad(time.tm_hour, 2)):\(pad(time.tm_min, 2)):\(pad(time.tm_sec, 2)).\(pad(Int32(millis), 3))Z"
    }
}
