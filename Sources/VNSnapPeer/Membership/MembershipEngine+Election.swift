import Logging
import VNSnapCore
import VNSnapCrypto

extension MembershipEngine {
    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Election (DESIGN §5)

    /// The member sets the election counts: known = not left, alive = alive or suspect (a suspect is still a
    /// member until it is declared dead; counting it out would move the initiator on every missed probe).
    var electionSets: (known: Set<PeerID>, alive: Set<PeerID>) {
        var known: Set<PeerID> = [self.swim.me.id]
        var alive: Set<PeerID> = [self.swim.me.id]
        for member in self.swim.otherMembers where member.state.status != .left {
            known.insert(member.state.id)
            if member.state.status.isActive { alive.insert(member.state.id) }
        }
        return (known, alive)
    }

    func evaluateElection() {
        guard !self.swim.hasLeft else { return }
        let sets = self.electionSets
        // A peer whose seeds have not answered yet knows only itself; electing itself would give every peer
        // started at once its own initiator. It waits (a peer with no seeds founds the cluster).
        let alive = self.isWaitingForCluster ? [] : sets.alive
        // Decide on a copy: the new term is used only once it is stored.
        var next = self.election
        guard case .changed(let initiator, let term) = next.evaluate(known: sets.known, alive: alive) else { return }
        guard self.persist(term: term) else { return }
        self.election = next
        self.logger.notice(
            "Initiator changed",
            metadata: [
                "election.initiator": "\(initiator.flatMap { self.swim.state(of: $0)?.name } ?? "none (no majority)")",
                "election.term": "\(term)", "election.known": "\(sets.known.count)",
                "election.alive": "\(sets.alive.count)",
            ]
        )
    }

    /// Whether this peer should not elect yet: it has seeds and none has answered, or it has no seeds but was
    /// in a cluster before (a stored term) and nobody has contacted it yet — for one reconnect period, so a
    /// restarted founder does not name itself initiator while the others still have one.
    var isWaitingForCluster: Bool {
        guard !self.swim.hasJoined else { return false }
        if self.swim.isWaitingForSeeds { return true }
        return self.seeds.isEmpty && self.storedTermAtStart > 0
            && self.startedAt.duration(to: .now) < self.swim.settings.reconnectInterval * 3
    }

    /// Adopts a higher term seen on a datagram.
    func observe(term: UInt64) {
        var next = self.election
        guard next.observe(term: term), self.persist(term: term) else { return }
        self.election = next
    }

    /// Stores the term before anything acts on it; the write is small and rare (once per initiator change).
    /// On failure the change is not made, and this peer claims no initiator until a store succeeds.
    private func persist(term: UInt64) -> Bool {
        do {
            try self.termStore.save(term)
            self.termError = nil
            return true
        } catch {
            self.termError = "\(error)"
            self.logger.error("Cannot store the election term", metadata: ["election.error": "\(error)"])
            return false
        }
    }

    /// The initiator this peer may act on: none while the term is not durable.
    var initiator: PeerID? {
        self.termError == nil ? self.election.initiator : nil
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Status

    func status() -> MembershipStatus {
        let now = ContinuousClock.now
        let me = self.swim.me
        var members = [self.memberStatus(me, since: nil, now: now, isSelf: true)]
        for member in self.swim.otherMembers.sorted(by: { $0.state.name < $1.state.name }) {
            members.append(self.memberStatus(member.state, since: member.lastChange, now: now, isSelf: false))
        }
        let sets = self.electionSets
        return MembershipStatus(
            members: members,
            election: .init(
                initiator: self.initiator.flatMap { self.swim.state(of: $0)?.name },
                term: self.election.term,
                majority: !self.isWaitingForCluster
                    && Election.hasQuorum(alive: sets.alive.count, known: sets.known.count),
                known: sets.known.count,
                alive: sets.alive.count,
                termError: self.termError
            ),
            keyring: .init(
                generation: self.keyring.generation,
                keys: self.keyring.keys.enumerated().map {
                    .init(fingerprint: $0.element.shortFingerprint, primary: $0.offset == 0)
                },
                lastUnknownKey: self.lastUnknownKey.map {
                    "\($0.description), \(Int($0.at.duration(to: now).inSeconds)) s ago"
                }
            ),
            publicAddress: self.swim.nat.publicAddress?.description,
            waitingForSeeds: self.isWaitingForCluster ? self.seeds : [],
            localHealth: self.swim.localHealthScore,
            datagramsSent: self.datagramsSent,
            datagramsReceived: self.datagramsReceived,
            rejected: self.rejected,
            served: self.isRelay ? self.relayServed(now: now) : nil,
            counters: self.swim.counters
        )
    }

    private func memberStatus(_ state: MemberState, since: Instant?, now: Instant, isSelf: Bool)
        -> MembershipStatus.Member
    {
        MembershipStatus.Member(
            name: state.name,
            id: state.id.description,
            address: state.address,
            tunnel: state.metadata.tunnelAddress,
            roles: state.metadata.roles.map(\.rawValue).sorted(),
            state: state.status.description,
            incarnation: state.incarnation,
            sinceChangeSeconds: since.map { $0.duration(to: now).inSeconds } ?? 0,
            storeCapacity: state.metadata.storeCapacity,
            version: state.metadata.version,
            keyringGeneration: state.metadata.keyringGeneration,
            keyringInSync: state.metadata.keyringGeneration == self.keyring.generation
                && state.metadata.keyringDigest == self.keyring.digest,
            isSelf: isSelf,
            nat: state.metadata.nat.rawValue,
            relays: state.metadata.relays.isEmpty
                ? nil : state.metadata.relays.map { self.swim.state(of: $0)?.name ?? "\($0)" }
        )
    }
}
