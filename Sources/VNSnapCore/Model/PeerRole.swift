/// What a peer does for the cluster (DESIGN §2); a peer may have several roles.
public enum PeerRole: String, Sendable, Hashable, Codable, CaseIterable {
    /// Runs VMs.
    case vm
    /// Holds images in RAM or on disk for others.
    case store
    /// Forwards traffic between networks that cannot reach each other.
    case relay
}
