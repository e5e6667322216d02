import VNSnapCore

/// A store request that failed, saying why.
public typealias StoreError = CodedError<StoreErrorCode>

/// What kind of store failure.
public struct StoreErrorCode: ErrorCode {
    public let name: String
    /// The store refused the request (no room, a name it does not take, a drop it will not do).
    public static let refused = Self(name: "refused")
    /// The store tried and failed.
    public static let failed = Self(name: "failed")
    /// The connection closed before the answer.
    public static let closed = Self(name: "closed")
    /// An answer that does not fit the request.
    public static let unexpected = Self(name: "unexpected")
    /// The other side sealed its stream under a key this keyring does not hold.
    public static let unknownKey = Self(name: "unknownKey")
    /// No way to the store worked: not directly, not through any of its relays.
    public static let unreachable = Self(name: "unreachable")
}
