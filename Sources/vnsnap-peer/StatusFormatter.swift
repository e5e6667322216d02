import Foundation
import VNSnapCore
import VNSnapImage
import VNSnapPeer

/// Renders `PeerStatus` as aligned text tables.
enum StatusFormatter {
    static func format(_ status: PeerStatus) -> String {
        var out = ""
        let peer = status.peer
        out += "peer \(peer.name) (id \(peer.id)) in cluster \(peer.cluster), version \(peer.version)\n"
        out += "  bind \(peer.bind)  roles \(peer.roles.joined(separator: ","))  pid \(peer.pid)"
        out += "  up \(String(format: "%.1f", peer.uptimeSeconds)) s\n"
        out += self.membership(status.membership)
        out += "violins: " + status.violins.map { "\($0.name) (vni \($0.vni))" }.joined(separator: ", ") + "\n"

        out += "\nVMs\n"
        out += self.table(
            ["NAME", "VIOLIN", "STATE", "QEMU", "PID", "ACCEL", "MAC"],
            status.vms.map { vm in
                var state = vm.state
                if let code = vm.exitStatus { state += " (\(code))" }
                if vm.reattached == true, vm.state == "running" { state = "running (reattached)" }
                if vm.fenced == true { state = "fenced (no majority)" }
                return [
                    vm.name, vm.violin, state, vm.runState ?? "-", vm.pid.map(String.init) ?? "-", vm.accel, vm.mac,
                ]
            }
        )
        for vm in status.vms {
            if let error = vm.error { out += "  \(vm.name): \(error)\n" }
            if let moved = vm.movedTo { out += "  \(vm.name): \(moved)\n" }
        }

        out += "\nswitch ports\n"
        out += self.table(
            ["VM", "VIOLIN", "VNI", "EPOCH", "RX FRAMES", "RX BYTES", "TX FRAMES", "TX BYTES", "DROPS"],
            status.switch.ports.map { port in
                [port.vm, port.violin, "\(port.vni)", "\(port.epoch)"] + self.counterCells(port.counters)
            }
        )
        out += "\ntunnels\n"
        out += self.table(
            ["PEER", "ADDRESS", "STATE", "PATH", "SEEN AT", "RX FRAMES", "RX BYTES", "TX FRAMES", "TX BYTES", "DROPS"],
            status.switch.tunnels.map { tunnel in
                [
                    tunnel.peer, tunnel.address, tunnel.up ? "up" : "down", tunnel.path ?? "direct",
                    tunnel.observed ?? "-",
                ]
                    + self.counterCells(tunnel.counters)
            }
        )
        let clusterKeyed = status.switch.tunnels.filter { $0.endToEnd == false }.map(\.peer)
        if !status.switch.tunnels.isEmpty {
            out += "sealed end to end (pair keys): "
            out +=
                clusterKeyed.isEmpty
                ? "every tunnel\n" : "not to \(clusterKeyed.joined(separator: ", ")) (cluster keys)\n"
        }
        if let relays = status.switch.relays, !relays.isEmpty {
            out += "this peer's relays: \(relays.joined(separator: ", "))"
            out += status.switch.mapping.map { " (they see its tunnel at \($0))\n" } ?? "\n"
        }
        if let served = status.switch.served {
            out += "relayed for others: " + self.served(served) + "\n"
        }
        let rejected = self.drops(status.switch.rejected)
        out += "\nrejected at the tunnel socket: \(rejected.isEmpty ? "none" : rejected)\n"
        let learned = status.switch.learned.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        out += "learned MACs: \(learned.isEmpty ? "none" : learned.joined(separator: " "))\n"
        if let store = status.store { out += self.store(store) }
        if let splice = status.splice {
            out += "store streams joined for others (splice \(splice.address)): \(splice.joined) joined, "
            out += "\(splice.refused) refused, \(splice.open) open, \(splice.bytes / 1_048_576) MiB\n"
        }
        return out
    }

    /// A store peer's RAM and disk use and its replicas.
    static func store(_ store: StoreService.Status) -> String {
        let mib = ByteCount.mebibytes
        let usage = store.usage
        var out = "\nimage store at \(store.address): RAM \(mib(usage.ramUsed)) of \(mib(usage.ramBudget)) MiB"
        out += ", disk \(mib(usage.diskBytes)) MiB, \(usage.replicas.count) replicas\n"
        if !usage.replicas.isEmpty {
            out += self.table(
                ["SNAPSHOT", "VM", "IMAGE", "CHUNKS", "MiB", "STATE", "WHERE"],
                usage.replicas.map { replica in
                    let place = [replica.inRAM ? "RAM" : nil, replica.onDisk ? "disk" : nil].compactMap { $0 }
                    return [
                        "\(replica.key.snapshot)", replica.key.vm, replica.key.kind.rawValue, "\(replica.chunks)",
                        mib(replica.storedBytes), replica.sealed ? "sealed" : "receiving",
                        place.isEmpty ? "-" : place.joined(separator: "+"),
                    ]
                }
            )
        }
        return out
    }

    /// Members, the election and the keyring.
    static func membership(_ membership: MembershipStatus) -> String {
        var out = ""
        let election = membership.election
        let initiator = election.initiator ?? "none"
        out += "initiator: \(initiator)  term \(election.term)  "
        out +=
            election.majority
            ? "majority: yes (\(election.alive) of \(election.known) alive)\n"
            : "majority: NO (\(election.alive) of \(election.known) alive: no initiator on this side)\n"
        if let error = election.termError { out += "  term not stored: \(error)\n" }
        if !membership.waitingForSeeds.isEmpty {
            out +=
                "waiting for seeds: \(membership.waitingForSeeds.joined(separator: ", ")) (running alone meanwhile)\n"
        }
        out += self.keyring(membership)
        out += "\nmembers\n"
        out += self.table(
            ["NAME", "STATE", "INC", "ADDRESS", "TUNNEL", "ROLES", "NAT", "RELAYS", "SINCE", "KEYRING", "VERSION"],
            membership.members.map { member in
                [
                    member.name + (member.isSelf ? " *" : ""), member.state, "\(member.incarnation)", member.address,
                    member.tunnel, member.roles.joined(separator: ","), member.nat ?? "-",
                    member.relays?.joined(separator: ",") ?? "-",
                    member.isSelf ? "-" : "\(Int(member.sinceChangeSeconds)) s",
                    "gen \(member.keyringGeneration)" + (member.keyringInSync ? "" : " (differs)"), member.version,
                ]
            }
        )
        if let seen = membership.publicAddress { out += "this peer as other domains see it: \(seen)\n" }
        let rejected = self.drops(membership.rejected)
        out += "membership datagrams: sent \(membership.datagramsSent), accepted \(membership.datagramsReceived), "
        out += "rejected \(rejected.isEmpty ? "none" : rejected); local health \(membership.localHealth)\n"
        if let served = membership.served { out += "membership relayed for others: " + self.served(served) + "\n" }
        return out
    }

    /// What a relay forwarded, per peer served.
    static func served(_ served: [String: RelayServed]) -> String {
        guard !served.isEmpty else { return "nobody" }
        return served.sorted { $0.key < $1.key }.map { name, counts in
            "\(name) \(counts.datagrams) datagrams \(counts.bytes) bytes"
                + (counts.refused > 0 ? " (\(counts.refused) refused)" : "")
        }.joined(separator: ", ")
    }

    /// The keyring line(s).
    static func keyring(_ membership: MembershipStatus) -> String {
        let keys = membership.keyring.keys.map { $0.fingerprint + ($0.primary ? " (primary)" : "") }
        var out = "keyring (generation \(membership.keyring.generation)): \(keys.joined(separator: ", "))\n"
        if let unknown = membership.keyring.lastUnknownKey {
            out += "  last datagram with a key not in this keyring: \(unknown)\n"
        }
        return out
    }

    private static func counterCells(_ counters: TrafficCounters) -> [String] {
        let drops = self.drops(counters.drops)
        return [
            "\(counters.rxFrames)", "\(counters.rxBytes)", "\(counters.txFrames)", "\(counters.txBytes)",
            drops.isEmpty ? "0" : drops,
        ]
    }

    private static func drops(_ drops: [TunnelDropReason: UInt64]) -> String {
        drops.filter { $0.value > 0 }.sorted { $0.key.rawValue < $1.key.rawValue }
            .map { "\($0.key.rawValue)=\($0.value)" }.joined(separator: " ")
    }

    static func table(_ header: [String], _ rows: [[String]]) -> String {
        guard !rows.isEmpty else { return "  (none)\n" }
        var widths = header.map(\.count)
        for row in rows {
            for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            "  "
                + cells.enumerated().map { i, cell in
                    i == cells.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
                }.joined(separator: "  ") + "\n"
        }
        return line(header) + rows.map(line).joined()
    }
}
