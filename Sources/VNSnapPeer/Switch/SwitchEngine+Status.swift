import VNSnapCore

/// The switch's counters, paths and relay work as `status` shows them.
extension SwitchEngine {
    func status() -> SwitchStatus {
        let learned = self.core.learnedAddresses(now: .now)
        return SwitchStatus(
            ports: self.ports.map {
                SwitchStatus.Port(
                    vm: $0.vm,
                    violin: $0.violin.name,
                    vni: $0.violin.vni.rawValue,
                    epoch: $0.epoch,
                    counters: $0.counters,
                    held: $0.heldTotal,
                    recorded: $0.recordedTotal
                )
            },
            tunnels: self.tunnels.map {
                SwitchStatus.Tunnel(
                    peer: $0.name,
                    address: $0.address.displayString,
                    path: self.pathDescription($0),
                    observed: $0.observed?.displayString,
                    flaps: $0.path?.flaps ?? 0,
                    endToEnd: $0.endToEnd,
                    up: $0.up,
                    remoteSession: $0.inbound.session,
                    nextSequence: $0.nextSequence,
                    counters: $0.counters
                )
            },
            rejected: self.rejected,
            relays: self.myRelays.compactMap { id in self.tunnelIndex[id].map { self.tunnels[$0].name } },
            mapping: self.myMapping,
            served: !self.isRelay
                ? nil
                : Dictionary(
                    self.relayTable.served.map { entry in
                        (self.tunnelIndex[entry.key].map { self.tunnels[$0].name } ?? "\(entry.key)", entry.value)
                    },
                    uniquingKeysWith: { a, _ in a }
                ),
            learned: Dictionary(
                learned.map { (self.violinsByVNI[$0.key]?.name ?? "vni-\($0.key)", $0.value.count) },
                uniquingKeysWith: +
            )
        )
    }
}
