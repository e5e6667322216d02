/// What a receiver remembers about one sender: its current session and that session's replay window.
public struct InboundTunnelState: Sendable, Hashable {
    /// The sender's session currently accepted, `nil` before its first datagram.
    public private(set) var session: UInt64?
    /// Replay window of the current session.
    public private(set) var window = ReplayWindow()

    /// Nothing seen yet.
    public init() {}

    /// Admits an authenticated datagram, or returns why it must be dropped.
    ///
    /// A higher session means the sender restarted: its sequence numbers start over, so the window
    /// restarts too. A lower session is an old datagram of a previous run and is dropped.
    public mutating func admit(session: UInt64, sequence: UInt64) -> TunnelDropReason? {
        if let current = self.session {
            if session < current { return .staleSession }
            if session > current {
                self.session = session
                self.window = ReplayWindow()
            }
        } else {
            self.session = session
        }
        return self.window.accept(sequence) ? nil : .replayed
    }
}
