extension SWIMInstance {
    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Applying updates (SWIM §4.2, memberlist's aliveNode/suspectNode/deadNode)

    /// Applies one gossiped update; returns the directives it causes (membership changes).
    ///
    /// - Parameter fromPushPull: a state from a full-state exchange: a remote `dead` is taken as `suspect`,
    ///   so one peer's stale view cannot kill a member that others can still reach (memberlist's merge rule).
    ///   Push/pull states are not re-gossiped (the exchange itself spreads them), except the sender's own.
    mutating func apply(
        _ update: SWIMUpdate,
        now: Instant,
        fromPushPull: Bool = false,
        sender: PeerID? = nil
    ) -> [SWIMDirective<Instant>] {
        var directives: [SWIMDirective<Instant>] = []
        var update = update
        if fromPushPull, update.state.status == .dead {
            update.state.status = .suspect
        }
        let incoming = update.state
        let gossipIt = !fromPushPull || incoming.id == sender

        if incoming.id == self.me.id {
            self.refuteIfNeeded(incoming)
            return directives
        }

        guard let current = self.members[incoming.id] else {
            // A member we have not heard of. Dead and left ones are remembered as tombstones but not announced
            // as new: they are gone.
            self.setMember(Member(state: incoming, lastChange: now), for: incoming.id)
            if incoming.status.isActive {
                self.addToProbeOrder(incoming.id, isNew: true)
                directives.append(.memberChanged(incoming, previous: nil))
            }
            if incoming.status == .suspect {
                self.startSuspicion(of: incoming.id, by: update.origin, now: now)
            }
            if gossipIt { self.enqueueBroadcast(update) }
            return directives
        }

        guard incoming.supersedes(current.state) else {
            // Same news again: a suspicion seen from another origin is an independent confirmation.
            // Push/pull only relays what its sender heard: not a confirmation of its own.
            // A new confirmation is passed on while it still shortens suspicions (memberlist re-broadcasts it).
            if !fromPushPull, incoming.status == .suspect, current.state.status == .suspect,
                incoming.incarnation == current.state.incarnation,
                self.confirmSuspicion(of: incoming.id, by: update.origin, now: now)
            {
                self.enqueueBroadcast(update)
            }
            return directives
        }
        // Left is final for the member's incarnation; only the member itself, rejoining with a higher
        // incarnation, brings it back.
        if current.state.status == .left, incoming.status != .left, incoming.incarnation <= current.state.incarnation {
            return directives
        }

        let previous = current.state.status
        self.setMember(
            Member(state: incoming, lastChange: incoming.status != previous ? now : current.lastChange),
            for: incoming.id
        )
        switch incoming.status {
        case .alive:
            self.suspicions[incoming.id] = nil
            if !previous.isActive { self.addToProbeOrder(incoming.id) }
        case .suspect:
            if fromPushPull, self.suspicions[incoming.id] != nil { break }
            self.startSuspicion(of: incoming.id, by: update.origin, now: now)
        case .dead, .left:
            self.suspicions[incoming.id] = nil
            if self.probe?.target == incoming.id { self.probe = nil }
        }
        // New metadata (a moved tunnel, a new keyring) is news for the shell too.
        if incoming.status != previous || incoming.metadata != current.state.metadata {
            directives.append(.memberChanged(incoming, previous: previous))
        }
        // A push/pull state carries no origin: re-gossiping it would attribute a suspicion to the wrong peer
        // and count as a false "independent" confirmation elsewhere.
        if gossipIt { self.enqueueBroadcast(update) }
        return directives
    }

    /// Someone says this peer is suspect or dead: refute with a higher incarnation (SWIM §4.2), unless it left.
    mutating func refuteIfNeeded(_ claim: MemberState) {
        guard !self.hasLeft else { return }
        switch claim.status {
        case .alive:
            // Our own old alive from a previous run: make sure ours is newer.
            guard claim.incarnation > self.me.incarnation else { return }
            self.me.incarnation = claim.incarnation &+ 1
        case .suspect, .dead, .left:
            guard claim.incarnation >= self.me.incarnation else { return }
            self.me.incarnation = claim.incarnation &+ 1
            self.counters.refutations &+= 1
            // Being suspected means others did not hear us: a sign our own health is poor (Lifeguard §IV.A).
            self.adjustLocalHealth(1)
        }
        self.enqueueBroadcast(SWIMUpdate(state: self.me, origin: self.me.id))
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Dissemination (SWIM §4.1: piggybacking, infection-style)

    /// Queues an update for piggybacking; a newer update about the same member replaces an older one.
    mutating func enqueueBroadcast(_ update: SWIMUpdate) {
        self.broadcasts[update.state.id] = Broadcast(update: update, transmits: 0)
    }

    /// Picks the updates to piggyback on one outgoing message: fewest transmissions first, each at most
    /// `retransmitLimit` times.
    /// Never more than `budget` encoded bytes, so the message fits one datagram.
    mutating func piggyback(budget: Int = SWIMCodec.maximumSize) -> [SWIMUpdate] {
        guard self.settings.maxPiggyback > 0, !self.broadcasts.isEmpty else { return [] }
        let limit = self.retransmitLimit
        // The few least-transmitted entries, found in one pass (no sort of the whole queue per message).
        let slots = self.settings.maxPiggyback
        var best: [(transmits: Int, id: PeerID)] = []
        best.reserveCapacity(slots + 1)
        for (id, broadcast) in self.broadcasts {
            let candidate = (transmits: broadcast.transmits, id: id)
            if best.count == slots {
                guard let worst = best.last, (candidate.transmits, candidate.id) < (worst.transmits, worst.id) else {
                    continue
                }
                best.removeLast()
            }
            let index = best.firstIndex { (candidate.transmits, candidate.id) < ($0.transmits, $0.id) } ?? best.count
            best.insert(candidate, at: index)
        }
        let chosen = best.map(\.id)
        var updates: [SWIMUpdate] = []
        updates.reserveCapacity(chosen.count)
        var remaining = budget
        for id in chosen {
            guard var broadcast = self.broadcasts[id] else { continue }
            let size = SWIMCodec.size(of: broadcast.update)
            guard size <= remaining else { continue }
            remaining -= size
            updates.append(broadcast.update)
            broadcast.transmits += 1
            self.broadcasts[id] = broadcast.transmits >= limit ? nil : broadcast
        }
        return updates
    }

    /// A message to `address` with piggybacked gossip. With `buddy` (a suspect being probed), the message
    /// tells it of its suspicion whether or not that news is still queued (Lifeguard §IV.C).
    mutating func message(
        _ body: SWIMMessage.Body,
        to address: String,
        buddy: MemberState? = nil
    ) -> SWIMDirective<Instant> {
        var budget = SWIMCodec.maximumSize - SWIMCodec.baseSize(of: body)
        var gossip: [SWIMUpdate] = []
        if let buddy {
            let update = SWIMUpdate(state: buddy, origin: self.me.id)
            gossip.append(update)
            budget -= SWIMCodec.size(of: update)
        }
        gossip += self.piggyback(budget: budget).filter { $0.state.id != buddy?.id }
        self.sentTo.insert(address)
        return .send(SWIMMessage(from: self.me.id, body: body, gossip: gossip), to: address)
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Probe order (SWIM §4.3: round-robin over a random permutation)

    /// Adds a member to the probe order at a random place (SWIM §4.3: new members are probed within a round).
    /// Appends and swaps, O(1), so large clusters join quickly; a member already listed is not added twice.
    mutating func addToProbeOrder(_ id: PeerID, isNew: Bool = false) {
        guard isNew || !self.probeOrder.contains(id) else { return }
        self.probeOrder.append(id)
        let last = self.probeOrder.count - 1
        let position = Int.random(in: 0...last, using: &self.rng)
        self.probeOrder.swapAt(position, last)
    }

    /// The next member to probe, reshuffling after each full round; `nil` if nobody can be probed.
    mutating func nextProbeTarget() -> PeerID? {
        for _ in 0..<(self.probeOrder.count + 1) {
            if self.probeIndex >= self.probeOrder.count {
                self.probeOrder.removeAll { self.members[$0]?.state.status.isActive != true }
                self.probeOrder.shuffle(using: &self.rng)
                self.probeIndex = 0
                if self.probeOrder.isEmpty { return nil }
            }
            let candidate = self.probeOrder[self.probeIndex]
            self.probeIndex += 1
            if self.members[candidate]?.state.status.isActive == true { return candidate }
        }
        return nil
    }

    /// Up to `count` random alive members other than `excluding`, for indirect probes and push/pull.
    /// Samples the probe order instead of sorting every member, so it stays cheap in large clusters.
    /// With `includeSuspects`, suspect members count too (gossip must reach them, so they can refute).
    mutating func randomActiveMembers(_ count: Int, excluding: Set<PeerID>, includeSuspects: Bool = false)
        -> [MemberState]
    {
        guard count > 0, !self.probeOrder.isEmpty else { return [] }
        var result: [MemberState] = []
        var tried: Set<Int> = []
        let attempts = min(self.probeOrder.count, count * 4 + 8)
        var remaining = attempts * 2
        while tried.count < attempts, result.count < count, remaining > 0 {
            remaining -= 1
            let index = Int.random(in: 0..<self.probeOrder.count, using: &self.rng)
            guard tried.insert(index).inserted else { continue }
            let id = self.probeOrder[index]
            if !excluding.contains(id), let member = self.members[id],
                member.state.status == .alive || (includeSuspects && member.state.status == .suspect)
            {
                result.append(member.state)
            }
        }
        return result
    }
}
