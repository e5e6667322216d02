/// Why a tunnel datagram or a port frame was dropped; each reason has its own counter in `status`.
public enum TunnelDropReason: String, Error, Hashable, Sendable, CaseIterable, Codable, CodingKeyRepresentable {
    /// Shorter than a header plus a tag.
    case truncated
    /// A wire version this build does not speak.
    case badVersion
    /// A payload kind this build does not know.
    case unknownKind
    /// A field out of range (a VNI past 24 bits).
    case malformed
    /// Addressed to another peer.
    case misdirected
    /// From a peer this one does not know.
    case unknownPeer
    /// Sealed under a key that is not in the keyring.
    case unknownKey
    /// The authentication tag does not verify: tampered, or another key or cluster name.
    case badTag
    /// A sequence number already seen or older than the replay window.
    case replayed
    /// From an earlier session of the sender (a restarted peer's old datagrams).
    case staleSession
    /// For a VNI with no local port.
    case unknownVNI
    /// An Ethernet frame shorter than its header.
    case runt
    /// Unicast to a destination behind the port or tunnel it came from.
    case hairpin
    /// A frame from a tunnel whose destination is known to be behind another tunnel.
    case notLocal
    /// The outgoing socket refused it (the VM's NIC socket is gone, the peer unreachable).
    case sendFailed
    /// The VM's NIC queue was full (the VM is paused or slower than its traffic).
    case queueFull
    /// The receiving socket reported an error.
    case receiveFailed
    /// Larger than one datagram can carry.
    case oversized
    /// A new-epoch frame for a VM not cut yet, in snapshot mode `drop` (VNsnap's policy, for comparison).
    case epochPolicy
    /// The hold queue of a VM being cut was full.
    case holdFull
    /// Asked to relay by a peer while this peer has no `relay` role.
    case notRelay
    /// Asked to relay to a peer that keeps no session with this relay.
    case noRelaySession
    /// Over the relay's rate cap for the pair.
    case relayRateCapped
    /// The same datagram again on another path (markers go on every path at once; the first one counts).
    case duplicate
}
