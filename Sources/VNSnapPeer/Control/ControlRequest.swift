/// One request on the control socket: a JSON object on one line.
public struct ControlRequest: Sendable, Codable, Hashable {
    /// What to do: `status`, `leave`, or `keys` (with `keyChange`).
    public var command: String
    /// For `keys`: the cluster-wide keyring change.
    public var keyChange: KeyringChange?

    /// Creates a request.
    public init(command: String, keyChange: KeyringChange? = nil) {
        self.command = command
        self.keyChange = keyChange
    }
}

/// The answer to one request: a JSON object on one line.
public struct ControlResponse: Sendable, Codable, Hashable {
    /// Whether the request succeeded.
    public var ok: Bool
    /// Why not, if it did not.
    public var error: String?
    /// The status, for `status` (and after `keys`, so the caller sees the new keyring).
    public var status: PeerStatus?

    /// Creates a response.
    public init(ok: Bool, error: String? = nil, status: PeerStatus? = nil) {
        self.ok = ok
        self.error = error
        self.status = status
    }
}
