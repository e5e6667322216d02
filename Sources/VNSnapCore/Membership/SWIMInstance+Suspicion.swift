#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension SWIMInstance {
    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Suspicion (SWIM §4.2; Lifeguard §IV.B, dynamic suspicion timeouts)

    /// The suspicion timeout after `confirmations` independent confirmations.
    ///
    /// It starts at α·log10(n) probe intervals and shrinks logarithmically toward start/β as confirmations
    /// arrive, reaching the floor after `suspicionConfirmations` of them (Lifeguard's formula). Plain SWIM
    /// keeps the start value.
    func suspicionTimeout(start: Duration, floor: Duration, confirmations: Int) -> Duration {
        guard self.settings.lifeguard else { return start }
        let k = Double(self.settings.suspicionConfirmations)
        let fraction = log10(Double(confirmations) + 1) / log10(k + 1)
        let timeout = start - (start - floor) * min(1, fraction)
        return max(floor, timeout)
    }

    /// `suspicionTimeout` for tests of the formula.
    public func suspicionTimeoutForTesting(start: Duration, floor: Duration, confirmations: Int) -> Duration {
        self.suspicionTimeout(start: start, floor: floor, confirmations: confirmations)
    }

    /// Starts suspecting `id` (suspected first by `origin`), unless it already is.
    mutating func startSuspicion(of id: PeerID, by origin: PeerID, now: Instant) {
        guard self.suspicions[id] == nil else {
            self.confirmSuspicion(of: id, by: origin, now: now)
            return
        }
        let start = self.settings.probeInterval * (self.settings.suspicionMultiplier * self.logClusterSize)
        let floor = start / self.settings.suspicionFloorDivisor
        self.counters.suspicions &+= 1
        self.suspicions[id] = Suspicion(startedAt: now, confirmations: [origin], start: start, floor: floor)
    }

    /// Counts a confirmation of a suspicion from an origin not counted yet.
    ///
    /// - Returns: whether it was new and still shortens the suspicion (then it is worth gossiping).
    @discardableResult
    mutating func confirmSuspicion(of id: PeerID, by origin: PeerID, now: Instant) -> Bool {
        guard self.settings.lifeguard, var suspicion = self.suspicions[id] else { return false }
        // The first suspecter plus `suspicionConfirmations` others reach the floor; more change nothing.
        guard suspicion.confirmations.count <= self.settings.suspicionConfirmations else { return false }
        guard suspicion.confirmations.insert(origin).inserted else { return false }
        self.suspicions[id] = suspicion
        return true
    }

    /// When the suspicion of `id` times out, given its confirmations so far.
    func suspicionDeadline(_ suspicion: Suspicion) -> Instant {
        // The first suspecter is not a confirmation of itself.
        let confirmations = max(0, suspicion.confirmations.count - 1)
        return suspicion.startedAt.advanced(
            by: self.suspicionTimeout(start: suspicion.start, floor: suspicion.floor, confirmations: confirmations)
        )
    }

    /// Declares dead every suspect whose suspicion timed out.
    mutating func expireSuspicions(now: Instant) -> [SWIMDirective<Instant>] {
        var directives: [SWIMDirective<Instant>] = []
        let expired = self.suspicions.filter { self.suspicionDeadline($0.value) <= now }.keys.sorted()
        for id in expired {
            self.suspicions[id] = nil
            guard var state = self.members[id]?.state, state.status == .suspect else { continue }
            state.status = .dead
            self.counters.declaredDead &+= 1
            directives += self.apply(SWIMUpdate(state: state, origin: self.me.id), now: now)
        }
        return directives
    }
}
