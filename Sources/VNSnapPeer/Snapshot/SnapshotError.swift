import VNSnapCore

/// A snapshot, restore or delete that was refused or failed, for the operator.
public typealias SnapshotError = CodedError<SnapshotErrorCode>

/// What kind of snapshot failure.
public struct SnapshotErrorCode: ErrorCode {
    public let name: String
    /// Asked for something that cannot be done now or here (no initiator, the VIOLIN busy, the snapshot in use, a
    /// bad request); nothing was touched.
    public static let refused = Self(name: "refused")
    /// No such snapshot, VM or VIOLIN.
    public static let notFound = Self(name: "notFound")
    /// A step of the work failed (a cut, an image, a restore step).
    public static let failed = Self(name: "failed")
    /// Data does not match what was committed (a chunk, a list, a manifest).
    public static let corrupt = Self(name: "corrupt")
    /// No answer in time.
    public static let timeout = Self(name: "timeout")
    /// The snapshot was aborted.
    public static let aborted = Self(name: "aborted")
}
