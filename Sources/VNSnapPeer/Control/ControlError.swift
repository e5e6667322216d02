import VNSnapCore

/// A control-socket failure, for humans.
public typealias ControlError = CodedError<ControlErrorCode>

/// What kind of control-socket failure.
public struct ControlErrorCode: ErrorCode {
    public let name: String
    /// The peer's control socket cannot be reached.
    public static let unreachable = Self(name: "unreachable")
    /// Another peer already answers on the socket.
    public static let inUse = Self(name: "inUse")
    /// The peer closed the connection without answering.
    public static let closed = Self(name: "closed")
    /// No answer in time.
    public static let timeout = Self(name: "timeout")
}
