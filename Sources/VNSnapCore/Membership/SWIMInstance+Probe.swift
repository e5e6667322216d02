extension SWIMInstance {
    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Ticks (SWIM §4.3 protocol periods; timers are outputs, timeouts are inputs)

    /// Advances every timer to `now`: probe phases, relays, suspicions, the next probe, push/pull, seeds.
    ///
    /// The shell MUST call this again at the `.scheduleTick(at:)` time it returns (always the last directive),
    /// or earlier; calling it early is harmless.
    public mutating func onTick(now: Instant) -> [SWIMDirective<Instant>] {
        var directives: [SWIMDirective<Instant>] = []
        if !self.hasLeft {
            directives += self.advanceProbe(now: now)
            directives += self.expireRelays(now: now)
            directives += self.expireSuspicions(now: now)
            if self.probe == nil, now >= self.nextProbeAt {
                directives += self.startProbe(now: now)
            }
            directives += self.gossipRound(now: now)
            directives += self.periodicPushPull(now: now)
            directives += self.retrySeeds(now: now)
            directives += self.reconnect(now: now)
            self.forgetOldTombstones(now: now)
        }
        directives.append(.scheduleTick(at: self.nextDeadline(after: now)))
        return directives
    }

    /// The earliest time something is due.
    func nextDeadline(after now: Instant) -> Instant {
        // A peer that left has nothing due; it only answers what it receives.
        if self.hasLeft { return now.advanced(by: self.settings.probeInterval) }
        var next = self.nextProbeAt
        if let probe = self.probe { next = min(next, probe.deadline) }
        for relay in self.relays.values { next = min(next, relay.deadline) }
        for suspicion in self.suspicions.values { next = min(next, self.suspicionDeadline(suspicion)) }
        next = min(next, self.nextPushPullAt)
        if let retry = self.seedRetryAt {
            next = min(next, retry)
        } else if !self.seeds.isEmpty {
            next = min(next, self.nextSeedCheckAt)
        }
        if self.settings.reconnectInterval > .zero, self.members.count > self.activeOthers {
            next = min(next, self.nextReconnectAt)
        }
        if self.settings.gossipInterval > .zero, !self.broadcasts.isEmpty { next = min(next, self.nextGossipAt) }
        // Never now or in the past (everything due now was just handled, so a tick "now" could only spin),
        // never more than one probe interval away.
        return max(now.advanced(by: .milliseconds(1)), min(next, now.advanced(by: self.settings.probeInterval)))
    }

    mutating func startProbe(now: Instant) -> [SWIMDirective<Instant>] {
        var directives: [SWIMDirective<Instant>] = []
        self.nextProbeAt = now.advanced(by: self.scaledProbeInterval)
        guard let target = self.nextProbeTarget(), let state = self.members[target]?.state else { return directives }
        let sequence = self.nextSequence()
        self.counters.probes &+= 1
        self.probe = Probe(
            target: target,
            sequence: sequence,
            phase: .direct,
            deadline: now.advanced(by: self.scaledProbeTimeout),
            periodEnd: self.nextProbeAt
        )
        // Buddy system (Lifeguard §IV.C): a suspect hears of its suspicion from whoever probes it.
        let buddy = self.settings.lifeguard && state.status == .suspect ? state : nil
        directives.append(self.message(.ping(sequence: sequence, target: target), to: state.address, buddy: buddy))
        return directives
    }

    mutating func advanceProbe(now: Instant) -> [SWIMDirective<Instant>] {
        var directives: [SWIMDirective<Instant>] = []
        guard var probe = self.probe, now >= probe.deadline else { return directives }
        guard let target = self.members[probe.target]?.state, target.status.isActive else {
            self.probe = nil
            return directives
        }
        switch probe.phase {
        case .direct:
            // No ack in time: ask k others to probe it (SWIM §3.1).
            let helpers = self.randomActiveMembers(self.settings.indirectProbes, excluding: [probe.target, self.me.id])
            for helper in helpers {
                directives.append(
                    self.message(
                        .pingRequest(sequence: probe.sequence, target: probe.target, address: target.address),
                        to: helper.address
                    )
                )
            }
            probe.phase = .indirect
            self.counters.indirectProbes &+= 1
            probe.nacksExpected = self.settings.lifeguard ? helpers.count : 0
            probe.deadline = max(probe.periodEnd, now)
            self.probe = probe
        case .indirect:
            self.probe = nil
            // Missing nacks mean our own messages are not getting through (Lifeguard §IV.A); all nacks back
            // means the helpers are fine and the target really is silent.
            if probe.nacksExpected > 0 {
                self.adjustLocalHealth(probe.nacksExpected - probe.nacksReceived)
            } else {
                self.adjustLocalHealth(1)
            }
            // Alive: start suspecting. Already suspect: our own failed probe is an independent confirmation
            // (Lifeguard §IV.B; memberlist's suspectNode from ourselves), which shortens the suspicion here and,
            // gossiped, everywhere.
            var suspect = target
            suspect.status = .suspect
            directives += self.apply(SWIMUpdate(state: suspect, origin: self.me.id), now: now)
        }
        return directives
    }

    /// One round of the gossip loop: pending news to a few random members.
    mutating func gossipRound(now: Instant) -> [SWIMDirective<Instant>] {
        var directives: [SWIMDirective<Instant>] = []
        guard self.settings.gossipInterval > .zero, now >= self.nextGossipAt else { return directives }
        self.nextGossipAt = now.advanced(by: self.settings.gossipInterval)
        guard !self.broadcasts.isEmpty else { return directives }
        for member in self.randomActiveMembers(
            self.settings.gossipFanout,
            excluding: [self.me.id],
            includeSuspects: true
        ) {
            guard !self.broadcasts.isEmpty else { break }
            directives.append(self.message(.gossip, to: member.address))
        }
        return directives
    }

    mutating func expireRelays(now: Instant) -> [SWIMDirective<Instant>] {
        var directives: [SWIMDirective<Instant>] = []
        for (sequence, relay) in self.relays.sorted(by: { $0.key < $1.key }) where relay.deadline <= now {
            self.relays[sequence] = nil
            if self.settings.lifeguard {
                directives.append(self.message(.nack(sequence: relay.originSequence), to: relay.origin))
            }
        }
        return directives
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Messages

    /// Handles one message that arrived from the membership address `address`.
    public mutating func onMessage(
        _ message: SWIMMessage,
        from address: String,
        relayed: Bool = false,
        now: Instant
    ) -> [SWIMDirective<Instant>] {
        var directives: [SWIMDirective<Instant>] = []
        guard message.from != self.me.id else { return directives }
        // Through a relay, the sender's address is its member address, not where its datagram came from: it says
        // nothing of this peer's NAT, and the answer goes back the way the shell routes to that member.
        if !relayed, !self.sentTo.contains(address), self.nat.unsolicitedInbound == false {
            self.nat.inboundUnsolicited()
            self.publishNAT()
        }
        for update in message.gossip {
            directives += self.apply(update, now: now)
        }
        guard !self.hasLeft else { return directives }
        switch message.body {
        case .ping(let sequence, let target):
            // A ping meant for a previous owner of this address is not ours to answer.
            guard target == self.me.id else { break }
            directives.append(self.message(.ack(sequence: sequence, observed: relayed ? "" : address), to: address))
            // Now and then, tell it from elsewhere whether unsolicited datagrams reach it.
            if !relayed, self.dialedBack[address].map({ $0.duration(to: now) >= Self.dialBackInterval }) ?? true {
                self.dialedBack[address] = now
                directives.append(.dialBack(SWIMMessage(from: self.me.id, body: .gossip), to: address))
            }

        case .pingRequest(let originSequence, let target, let targetAddress):
            let sequence = self.nextSequence()
            self.relays[sequence] = Relay(
                origin: address,
                originSequence: originSequence,
                deadline: now.advanced(by: self.scaledProbeTimeout)
            )
            directives.append(self.message(.ping(sequence: sequence, target: target), to: targetAddress))

        case .ack(let sequence, let observed):
            if let relay = self.relays.removeValue(forKey: sequence) {
                directives.append(self.message(.ack(sequence: relay.originSequence), to: relay.origin))
            } else if let probe = self.probe, probe.sequence == sequence {
                self.probe = nil
                self.adjustLocalHealth(-1)
                // Where the target saw this peer's ping come from: its public mapping, as seen from there.
                if let seen = HostPort(observed), let observer = HostPort(address) {
                    self.nat.observed(seen, by: observer.host)
                    self.publishNAT()
                }
            }

        case .nack(let sequence):
            if var probe = self.probe, probe.sequence == sequence, probe.phase == .indirect {
                probe.nacksReceived += 1
                self.probe = probe
            }

        case .gossip:
            break

        case .pushPull(let isResponse, let states):
            for state in states {
                directives += self.apply(
                    SWIMUpdate(state: state, origin: message.from),
                    now: now,
                    fromPushPull: true,
                    sender: message.from
                )
            }
            self.seedAnswered(address)
            // A request spans several datagrams; answer once, to the one that starts with its sender.
            if !isResponse, states.first?.id == message.from {
                directives += self.pushPull(to: address, isResponse: true)
            }
        }
        return directives
    }

    /// How often a prober is dialed back from another socket.
    static var dialBackInterval: Duration { .seconds(60) }

    /// Gossips this peer's NAT type when its classification changed.
    mutating func publishNAT() {
        let type = self.nat.type
        let publicAddress = type == .public ? "" : self.nat.publicAddress?.description ?? ""
        guard type != self.me.metadata.nat || publicAddress != self.me.metadata.publicAddress else { return }
        var metadata = self.me.metadata
        metadata.nat = type
        metadata.publicAddress = publicAddress
        self.updateMetadata(metadata)
    }
}
