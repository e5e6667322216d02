import Logging
import NIOCore
import VNSnapCore
import VNSnapCrypto

extension SwitchEngine {
    /// Adds the tunnel to a peer, or brings a known one back up at `address`, reached through its relays when it has
    /// any, and sealed with the pair's keys when it gossips an exchange key.
    func addTunnel(_ spec: SwitchService.TunnelSpec, address: SocketAddress) {
        let id = PeerID(name: spec.name)
        let index: Int
        var isNew = false
        if let known = self.tunnelIndex[id] {
            index = known
            self.tunnels[index].address = address
            self.tunnels[index].up = true
        } else {
            index = self.tunnels.count
            self.tunnelIndex[id] = index
            self.tunnels.append(TunnelState(name: spec.name, id: id, address: address, crypto: self.crypto))
            isNew = true
        }
        self.tunnels[index].relays = spec.relays
        self.tunnels[index].nat = spec.nat
        if isNew || spec.exchangeKey != self.tunnels[index].exchangeKey {
            self.tunnels[index].exchangeKey = spec.exchangeKey
            self.rekey(index)
        }
        self.updatePath(index)
    }

    /// Seals with the new primary and opens with every key of `crypto` from now on, each tunnel's pair keys
    /// derived again from it.
    func replaceCrypto(_ crypto: TunnelCrypto) {
        self.crypto = crypto
        for index in self.tunnels.indices { self.rekey(index) }
    }

    /// Derives tunnel `index`'s keys from the cluster's and the pair's exchange keys. A peer that gossips no key (or
    /// one that is not a usable point) gets the cluster's keys, and a warning: a relay could read its frames.
    private func rekey(_ index: Int) {
        let theirs = self.tunnels[index].exchangeKey
        if let exchange = self.exchange, let paired = self.crypto.paired(exchange, with: theirs) {
            self.tunnels[index].crypto = paired
            self.tunnels[index].endToEnd = true
            return
        }
        if self.exchange != nil {
            self.logger.warning(
                "Tunnel sealed with the cluster's keys only: the peer gossips no usable exchange key",
                metadata: ["tunnel.peer": "\(self.tunnels[index].name)", "tunnel.key.bytes": "\(theirs.count)"]
            )
        }
        self.tunnels[index].crypto = self.crypto
        self.tunnels[index].endToEnd = false
    }
}
