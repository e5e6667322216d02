import VNSnapCore

extension SplitMix64: @unchecked Sendable {}

typealias TestSWIM = SWIMInstance<TestInstant, SplitMix64>
typealias TestDirective = SWIMDirective<TestInstant>

enum SWIMFixtures {
    static let metadata = MemberMetadata(
        roles: [.vm],
        tunnelAddress: "10.0.0.1:7946",
        storeCapacity: 0,
        version: "test"
    )

    static func state(_ name: String, incarnation: UInt64 = 0, status: MemberStatus = .alive) -> MemberState {
        MemberState(
            id: PeerID(name: name),
            name: name,
            address: "\(name):7947",
            incarnation: incarnation,
            status: status,
            metadata: metadata
        )
    }

    /// An instance for `name` that already knows `others` as alive.
    static func instance(
        _ name: String,
        knowing others: [String] = [],
        settings: SWIMSettings = SWIMSettings(),
        seed: UInt64 = 1
    ) -> TestSWIM {
        var swim = TestSWIM(me: state(name), settings: settings, rng: SplitMix64(seed: seed), now: .zero)
        for other in others {
            _ = swim.onMessage(
                SWIMMessage(from: PeerID(name: other), body: .pushPull(isResponse: true, members: [state(other)])),
                from: "\(other):7947",
                now: .zero
            )
        }
        return swim
    }
}

extension Array where Element == TestDirective {
    /// The messages among the directives, with their addresses.
    var sends: [(SWIMMessage, String)] {
        self.compactMap {
            if case .send(let message, let address) = $0 { return (message, address) }
            return nil
        }
    }

    /// The membership changes among the directives.
    var changes: [(MemberState, MemberStatus?)] {
        self.compactMap {
            if case .memberChanged(let state, let previous) = $0 { return (state, previous) }
            return nil
        }
    }

    /// The tick time requested (always the last directive of `onTick`).
    var nextTick: TestInstant? {
        if case .scheduleTick(let at) = self.last { return at }
        return nil
    }
}

extension TestInstant {
    static func ms(_ milliseconds: Int) -> TestInstant { TestInstant.zero.advanced(by: .milliseconds(milliseconds)) }
}
