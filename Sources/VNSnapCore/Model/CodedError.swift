/// What kind of failure a `CodedError` is: one type per domain, whose values are its static members (so a new
/// kind is not a source break, unlike a public enum's case).
public protocol ErrorCode: Hashable, Sendable, CustomStringConvertible {
    /// The kind's name (`refused`, `timeout`).
    var name: String { get }
    /// How the domain's errors begin when printed (`QMP`), or `nil` for the message alone.
    static var prefix: String? { get }
}

extension ErrorCode {
    public var description: String { self.name }
    public static var prefix: String? { nil }
}

/// A failure of one domain (snapshot, store, control, QMP): a code to compare by, and a message for people.
///
/// Two errors are equal when their codes are (R8): messages name particulars and change.
public struct CodedError<Code: ErrorCode>: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of failure; compare errors by this.
    public var code: Code
    /// What went wrong, for the operator.
    public var message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(self.code) }

    public var description: String { Code.prefix.map { "\($0) \(self.code): \(self.message)" } ?? self.message }
}
