#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension SWIMInstance {
    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Join, push/pull, leave

    /// Joins through `seeds` (membership addresses; any alive member is enough): sends each a full-state
    /// push/pull request, and retries unanswered seeds with exponential backoff until one answers.
    public mutating func join(seeds: [String], now: Instant) -> [SWIMDirective<Instant>] {
        var directives: [SWIMDirective<Instant>] = []
        self.seeds = seeds
        self.enqueueBroadcast(SWIMUpdate(state: self.me, origin: self.me.id))
        for seed in seeds {
            directives += self.pushPull(to: seed, isResponse: false)
        }
        self.seedBackoff = self.settings.seedRetryInitial
        self.seedRetryAt = seeds.isEmpty ? nil : now.advanced(by: self.seedBackoff)
        directives.append(.scheduleTick(at: self.nextDeadline(after: now)))
        return directives
    }

    /// Whether seeds are still being retried (none has answered yet).
    public var isWaitingForSeeds: Bool { self.seedRetryAt != nil }

    mutating func seedAnswered(_ address: String) {
        if self.seeds.contains(address) || self.hasJoined {
            self.seedRetryAt = nil
        }
    }

    mutating func retrySeeds(now: Instant) -> [SWIMDirective<Instant>] {
        var directives: [SWIMDirective<Instant>] = []
        guard let retryAt = self.seedRetryAt else {
            // Joined: still, every `seedRetryMax`, try the seeds that are not alive members. After a long
            // partition the other side may be forgotten; its seeds are how the two find each other again.
            guard !self.seeds.isEmpty, now >= self.nextSeedCheckAt else { return directives }
            self.nextSeedCheckAt = now.advanced(by: self.settings.seedRetryMax)
            let reachable = Set(self.members.values.filter { $0.state.status.isActive }.map(\.state.address))
            for seed in self.seeds where !reachable.contains(seed) {
                directives += self.pushPull(to: seed, isResponse: false)
            }
            return directives
        }
        guard now >= retryAt else { return directives }
        for seed in self.seeds {
            directives += self.pushPull(to: seed, isResponse: false)
        }
        self.seedBackoff = min(self.seedBackoff * 2, self.settings.seedRetryMax)
        self.seedRetryAt = now.advanced(by: self.seedBackoff)
        return directives
    }

    /// This peer's full state in datagram-sized batches: itself first, then every member it remembers.
    mutating func pushPull(to address: String, isResponse: Bool) -> [SWIMDirective<Instant>] {
        var directives: [SWIMDirective<Instant>] = []
        let states = [self.me] + self.members.values.map(\.state).sorted { $0.id < $1.id }
        let empty = SWIMCodec.baseSize(of: .pushPull(isResponse: isResponse, members: []))
        var batch: [MemberState] = []
        var size = empty
        self.sentTo.insert(address)
        func flush() {
            directives.append(
                .send(
                    SWIMMessage(from: self.me.id, body: .pushPull(isResponse: isResponse, members: batch)),
                    to: address
                )
            )
            batch.removeAll(keepingCapacity: true)
            size = empty
        }
        for state in states {
            let stateSize = SWIMCodec.size(of: state)
            if !batch.isEmpty, size + stateSize > SWIMCodec.maximumSize || batch.count >= self.settings.pushPullBatch {
                flush()
            }
            batch.append(state)
            size += stateSize
        }
        if !batch.isEmpty { flush() }
        return directives
    }

    /// The push/pull period, scaled with cluster size so per-member load stays flat (memberlist's
    /// pushPullScale: ×log2(n/32) above 32 members).
    var scaledPushPullInterval: Duration {
        let n = Double(self.activeCount)
        let scale = n <= 32 ? 1 : (log2(n / 32)).rounded(.up) + 1
        return self.settings.pushPullInterval * scale
    }

    mutating func periodicPushPull(now: Instant) -> [SWIMDirective<Instant>] {
        var directives: [SWIMDirective<Instant>] = []
        guard now >= self.nextPushPullAt else { return directives }
        self.nextPushPullAt = now.advanced(by: self.scaledPushPullInterval)
        if let partner = self.randomActiveMembers(1, excluding: [self.me.id]).first {
            directives += self.pushPull(to: partner.address, isResponse: false)
        }
        return directives
    }

    /// A full-state exchange with one random dead member, every `reconnectInterval`: after a partition heals,
    /// each side holds the other dead and would never probe it again; the exchange tells the dead member it
    /// was declared dead, it refutes, and the views merge.
    ///
    /// Each member tries with probability dead/alive (serf's rule), so the whole cluster makes about one
    /// attempt per dead member per interval, whatever its size: a full-state exchange is costly.
    mutating func reconnect(now: Instant) -> [SWIMDirective<Instant>] {
        guard self.settings.reconnectInterval > .zero, now >= self.nextReconnectAt else { return [] }
        self.nextReconnectAt = now.advanced(by: self.settings.reconnectInterval)
        let dead = self.members.values.filter { $0.state.status == .dead }
        guard !dead.isEmpty else { return [] }
        let probability = Double(dead.count) / Double(self.activeCount)
        guard Double.random(in: 0..<1, using: &self.rng) < probability,
            let target = dead.randomElement(using: &self.rng)
        else { return [] }
        return self.pushPull(to: target.state.address, isResponse: false)
    }

    /// Changes this peer's metadata and announces it under a higher incarnation, so the news supersedes the
    /// old state everywhere.
    public mutating func updateMetadata(_ metadata: MemberMetadata) {
        guard !self.hasLeft, metadata != self.me.metadata else { return }
        self.me.metadata = metadata
        self.me.incarnation &+= 1
        self.enqueueBroadcast(SWIMUpdate(state: self.me, origin: self.me.id))
    }

    /// Leaves the cluster: announces `left` with a higher incarnation and stops probing and refuting.
    ///
    /// The shell SHOULD keep the instance receiving for a moment (a few probe intervals) so the news spreads;
    /// the returned messages tell a few members directly.
    public mutating func leave(now: Instant) -> [SWIMDirective<Instant>] {
        var directives: [SWIMDirective<Instant>] = []
        guard !self.hasLeft else { return directives }
        self.me.incarnation &+= 1
        self.me.status = .left
        self.hasLeft = true
        self.probe = nil
        self.relays.removeAll()
        self.seedRetryAt = nil
        let update = SWIMUpdate(state: self.me, origin: self.me.id)
        self.enqueueBroadcast(update)
        for member in self.randomActiveMembers(self.settings.indirectProbes + 2, excluding: [self.me.id]) {
            directives.append(
                .send(
                    SWIMMessage(from: self.me.id, body: .pushPull(isResponse: true, members: [self.me]), gossip: []),
                    to: member.address
                )
            )
        }
        return directives
    }

    /// Installs a converged view at once (simulations and tests start from a formed cluster): every state
    /// becomes a member, no directives, no gossip.
    public mutating func installMembership(_ states: [MemberState], now: Instant) {
        for state in states where state.id != self.me.id {
            self.setMember(Member(state: state, lastChange: now), for: state.id)
            if state.status.isActive { self.probeOrder.append(state.id) }
        }
        self.probeOrder.shuffle(using: &self.rng)
        self.probeIndex = 0
    }

    /// Forgets dead and left members after the retention time.
    mutating func forgetOldTombstones(now: Instant) {
        // A sweep walks every member: once per retention/60 is plenty.
        guard now >= self.nextTombstoneSweep else { return }
        let retention = self.settings.deadRetention
        self.nextTombstoneSweep = now.advanced(by: retention / 60)
        let old = self.members.filter {
            !$0.value.state.status.isActive && $0.value.lastChange.duration(to: now) > retention
        }.keys
        for id in old {
            self.setMember(nil, for: id)
            self.broadcasts[id] = nil
        }
    }
}
