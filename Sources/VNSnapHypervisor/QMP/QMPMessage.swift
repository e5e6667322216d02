import VNSnapCore

import struct Foundation.Data
import class Foundation.JSONDecoder

/// One message from QEMU's monitor (QMP spec, docs/interop/qmp-spec).
public enum QMPMessage: Sendable, Hashable {
    /// The greeting QEMU sends on connect, before capabilities are negotiated.
    case greeting(JSONValue)
    /// A successful reply to the command with `id`.
    case success(id: Int?, JSONValue)
    /// A failed reply to the command with `id`.
    case failure(id: Int?, errorClass: String, description: String)
    /// An asynchronous event.
    case event(QMPEvent)

    /// Classifies one line of QMP JSON.
    public static func decode(line: [UInt8]) throws(QMPError) -> QMPMessage {
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: Data(line))
        } catch {
            throw QMPError(.malformedReply, "not JSON: \(String(decoding: line.prefix(200), as: UTF8.self))")
        }
        let id = value["id"]?.intValue
        if let greeting = value["QMP"] { return .greeting(greeting) }
        if let result = value["return"] { return .success(id: id, result) }
        if let error = value["error"] {
            return .failure(
                id: id,
                errorClass: error["class"]?.stringValue ?? "GenericError",
                description: error["desc"]?.stringValue ?? "(no description)"
            )
        }
        if let name = value["event"]?.stringValue {
            // A timestamp out of range is refused, not trapped on (fuzzing found the overflow). A missing part is 0.
            let stamp = value["timestamp"]
            guard let seconds = stamp?["seconds"].map({ $0.intValue }) ?? 0,
                let micros = stamp?["microseconds"].map({ $0.intValue }) ?? 0,
                case (let scaled, false) = Int64(seconds).multipliedReportingOverflow(by: 1_000_000),
                case (let timestamp, false) = scaled.addingReportingOverflow(Int64(micros))
            else {
                throw QMPError(.malformedReply, "event \(name) has a timestamp out of range")
            }
            return .event(QMPEvent(name: name, data: value["data"] ?? .null, timestampMicroseconds: timestamp))
        }
        throw QMPError(.malformedReply, "unknown QMP message: \(String(decoding: line.prefix(200), as: UTF8.self))")
    }
}

/// An asynchronous QMP event such as `STOP`, `RESUME` or `SHUTDOWN`.
public struct QMPEvent: Sendable, Hashable {
    /// Event name.
    public var name: String
    /// Event data (`.null` if none).
    public var data: JSONValue
    /// QEMU's wall-clock timestamp of the event, microseconds since the epoch.
    public var timestampMicroseconds: Int64

    /// Creates an event.
    public init(name: String, data: JSONValue, timestampMicroseconds: Int64) {
        self.name = name
        self.data = data
        self.timestampMicroseconds = timestampMicroseconds
    }
}

/// A QMP failure: the connection, the reply, or the command.
public typealias QMPError = CodedError<QMPErrorCode>

/// What kind of QMP failure.
public struct QMPErrorCode: ErrorCode {
    public let name: String
    public static var prefix: String? { "QMP" }
    /// The monitor connection closed or could not be opened.
    public static let disconnected = Self(name: "disconnected")
    /// QEMU sent something that is not QMP.
    public static let malformedReply = Self(name: "malformedReply")
    /// QEMU refused the command.
    public static let commandFailed = Self(name: "commandFailed")
    /// No reply in time.
    public static let timeout = Self(name: "timeout")
    /// A message out of order (a reply nobody asked for, no greeting).
    public static let protocolViolation = Self(name: "protocolViolation")
}
