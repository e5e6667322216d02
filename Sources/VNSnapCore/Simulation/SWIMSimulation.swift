/// Many `SWIMInstance`s on a simulated lossy network, in one process, in simulated time.
///
/// Every datagram is sized with `SWIMCodec` and one in `encodeOneIn` encoded too (its encoded size must be the
/// computed one, so the byte counts are real, and anything unencodable fails loudly); each is lost with
/// probability `loss`, and delivered after a random latency. Crashed members stop ticking and
/// drop what they receive. Fully deterministic for a given seed.
public final class SWIMSimulation {
    /// Shape of a simulation.
    public struct Configuration: Sendable {
        /// Members at the start, all alive and knowing each other.
        public var members: Int
        /// Probability that any datagram is lost.
        public var loss: Double = 0
        /// Shortest one-way latency.
        public var minimumLatency: Duration = .microseconds(200)
        /// Longest one-way latency.
        public var maximumLatency: Duration = .milliseconds(2)
        /// Protocol settings for every member.
        public var settings = SWIMSettings()
        /// Seed of everything random.
        public var seed: UInt64 = 1
        /// Datagrams per one actually encoded (1: all). Encoding is most of a large simulation's time.
        public var encodeOneIn = 16

        /// A configuration of `members` members.
        public init(members: Int) { self.members = members }
    }

    enum Event {
        case tick(Int)
        case deliver(Int, SWIMMessage, from: String)
    }

    /// One membership change seen by one member.
    public struct Observation: Sendable, Hashable {
        /// Who saw it.
        public var observer: Int
        /// About whom.
        public var subject: Int
        /// The new status.
        public var status: MemberStatus
        /// When.
        public var time: SimInstant
        /// The subject's incarnation in the update.
        public var incarnation: UInt64 = 0
    }

    public let configuration: Configuration
    public private(set) var instances: [SWIMInstance<SimInstant, SeededGenerator>] = []
    public private(set) var crashed: [Bool]
    public private(set) var now = SimInstant.zero
    /// Datagrams sent (including lost ones) and their encoded bytes.
    public private(set) var datagrams = 0
    public private(set) var bytes = 0
    /// Every membership change, in order.
    public private(set) var observations: [Observation] = []
    private var queue = EventQueue<Event>()
    private var scheduledTick: [Int64]
    private var addressIndex: [String: Int] = [:]
    private var idIndex: [PeerID: Int] = [:]
    private var rng: SeededGenerator
    /// Called for every delivered message (debugging a scenario: simulations replay exactly).
    public var onDeliver: ((_ to: Int, _ message: SWIMMessage, _ at: SimInstant) -> Void)?

    /// Builds a converged cluster of `configuration.members` members, each ticking from a random offset.
    public init(_ configuration: Configuration) {
        self.configuration = configuration
        self.rng = SeededGenerator(seed: configuration.seed)
        self.crashed = Array(repeating: false, count: configuration.members)
        self.scheduledTick = Array(repeating: .max, count: configuration.members)
        self.side = Array(repeating: 0, count: configuration.members)
        let metadata = MemberMetadata(roles: [.vm], tunnelAddress: "", storeCapacity: 0, version: "sim")
        let states = (0..<configuration.members).map { index in
            MemberState(
                id: PeerID(name: "m\(index)"),
                name: "m\(index)",
                address: "m\(index)",
                incarnation: 0,
                status: .alive,
                metadata: metadata
            )
        }
        for (index, state) in states.enumerated() {
            var instance = SWIMInstance<SimInstant, SeededGenerator>(
                me: state,
                settings: configuration.settings,
                rng: SeededGenerator(seed: configuration.seed &* 1_000_003 &+ UInt64(index)),
                now: .zero
            )
            instance.installMembership(states, now: .zero)
            self.instances.append(instance)
            self.addressIndex[state.address] = index
            self.idIndex[state.id] = index
            // Spread the members' protocol periods over the first interval, as independent processes would be.
            let offset = Int64.random(
                in: 0..<SimInstant.nanoseconds(configuration.settings.probeInterval),
                using: &self.rng
            )
            self.schedule(tickOf: index, at: offset)
        }
    }

    /// The index of a member by id.
    public func index(of id: PeerID) -> Int? { self.idIndex[id] }

    /// Stops member `index` dead: no more ticks, everything sent to it is lost.
    public func crash(_ index: Int) {
        self.crashed[index] = true
    }

    /// The side of a partition each member is on; datagrams between sides are lost (`partition`, `heal`).
    public private(set) var side: [Int]

    /// Splits the network: the members in `group` reach each other but no one else, and the others reach each
    /// other but none of `group` (nftables drops on both sides, as tools/chaos does).
    public func partition(_ group: Set<Int>) {
        self.side = self.instances.indices.map { group.contains($0) ? 1 : 0 }
    }

    /// Joins the network again.
    public func heal() {
        self.side = Array(repeating: 0, count: self.instances.count)
    }

    /// Member `index` leaves gracefully (as on SIGTERM) and then stops.
    public func leave(_ index: Int) {
        self.handle(self.instances[index].leave(now: self.now), of: index)
    }

    /// Runs events until `time`.
    public func run(until time: SimInstant) {
        while let next = self.queue.nextTime, next <= time.nanoseconds {
            let (at, event) = self.queue.pop()!  // !-safe, nextTime said there is one
            self.now = SimInstant(nanoseconds: at)
            switch event {
            case .tick(let index):
                guard !self.crashed[index], self.scheduledTick[index] == at else { continue }
                self.scheduledTick[index] = .max
                self.handle(self.instances[index].onTick(now: self.now), of: index)
            case .deliver(let index, let message, let from):
                guard !self.crashed[index] else { continue }
                self.onDeliver?(index, message, self.now)
                self.handle(self.instances[index].onMessage(message, from: from, now: self.now), of: index)
            }
        }
        self.now = time
    }

    private func handle(_ directives: [SWIMDirective<SimInstant>], of index: Int) {
        let sender = self.instances[index].me.address
        for directive in directives {
            switch directive {
            case .send(let message, let address):
                let size = message.gossip.reduce(SWIMCodec.baseSize(of: message.body)) { $0 + SWIMCodec.size(of: $1) }
                precondition(size <= SWIMCodec.maximumSize, "member \(index) produced an oversized message: \(message)")
                if self.datagrams % max(1, self.configuration.encodeOneIn) == 0 {
                    do {
                        let encoded = try SWIMCodec.encode(message)
                        precondition(encoded.count == size, "encoded \(encoded.count) bytes, sized \(size): \(message)")
                    } catch {
                        preconditionFailure("member \(index) produced an unencodable message (\(error)): \(message)")
                    }
                }
                self.datagrams += 1
                self.bytes += size
                guard let target = self.addressIndex[address], self.side[target] == self.side[index] else { continue }
                if self.configuration.loss > 0, Double.random(in: 0..<1, using: &self.rng) < self.configuration.loss {
                    continue
                }
                let latency = Int64.random(
                    in: SimInstant.nanoseconds(
                        self.configuration.minimumLatency
                    )...SimInstant.nanoseconds(self.configuration.maximumLatency),
                    using: &self.rng
                )
                self.queue.push(.deliver(target, message, from: sender), at: self.now.nanoseconds + latency)
            case .dialBack:
                break  // one simulated network, no NAT to learn about
            case .memberChanged(let state, _):
                if let subject = self.idIndex[state.id] {
                    self.observations.append(
                        Observation(
                            observer: index,
                            subject: subject,
                            status: state.status,
                            time: self.now,
                            incarnation: state.incarnation
                        )
                    )
                }
            case .scheduleTick(let at):
                self.schedule(tickOf: index, at: at.nanoseconds)
            }
        }
    }

    private func schedule(tickOf index: Int, at time: Int64) {
        guard time < self.scheduledTick[index] else { return }
        self.scheduledTick[index] = time
        self.queue.push(.tick(index), at: time)
    }

    // ==== ------------------------------------------------------------------------------------------------------------
    // MARK: Questions

    /// How member `observer` sees member `subject` now.
    public func status(of subject: Int, seenBy observer: Int) -> MemberStatus? {
        self.instances[observer].state(of: self.instances[subject].me.id)?.status
    }

    /// Whether every member that has not crashed sees `subject` as dead (or left).
    public func allSeeDead(_ subject: Int) -> Bool {
        self.instances.indices.allSatisfy { observer in
            observer == subject || self.crashed[observer]
                || !(self.status(of: subject, seenBy: observer)?.isActive ?? false)
        }
    }

    /// Times at which members declared a member dead that had not crashed (false positives).
    public var falsePositives: [Observation] {
        self.observations.filter { $0.status == .dead && !self.crashed[$0.subject] }
    }
}
