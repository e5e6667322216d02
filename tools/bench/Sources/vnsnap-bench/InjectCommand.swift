import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import VNSnapCore
import VNSnapCrypto

/// `vnsnap-bench inject`: hostile datagrams at a peer's tunnel port, in known categories, so tests can
/// check that each is dropped and counted under the right reason.
struct InjectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inject",
        abstract: "Send hostile datagrams to a peer's tunnel port.",
        discussion: """
            Kinds: wrongkey (well-formed, sealed under a random key: counted as unknownKey), \
            othercluster (sealed under --key for another cluster name: badTag), truncated (shorter than a \
            header and tag: truncated), badversion (random bytes, first byte not 1: badVersion), \
            replay (one datagram sealed under --key, sent --count times: 1 accepted, the rest replayed).
            """
    )

    enum Kind: String, ExpressibleByArgument, CaseIterable {
        case wrongkey, othercluster, truncated, badversion, replay
    }

    @Option(help: "Target host:port (a peer's tunnel address).")
    var target: String

    @Option(help: "What to send: \(Kind.allCases.map(\.rawValue).joined(separator: ", ")).")
    var kind: Kind

    @Option(help: "How many datagrams.")
    var count: Int = 1000

    @Option(help: "Claimed source peer name.")
    var source: String = "h1"

    @Option(help: "Destination peer name (the target's name).")
    var destination: String = "h2"

    @Option(help: "VNI in the header.")
    var vni: UInt32 = 42

    @Option(help: "A keyring file whose primary key to use (othercluster, replay).")
    var keyring: String?

    @Option(help: "Cluster name to seal for (replay uses the real one, othercluster any other).")
    var cluster: String = "not-this-cluster"

    @Option(help: "Datagrams per millisecond, at most (keeps the flood within socket buffers).")
    var rate: Int = 20

    func run() async throws {
        guard let colon = self.target.lastIndex(of: ":"),
            let port = Int(self.target[self.target.index(after: colon)...])
        else {
            throw ValidationError("--target must be host:port")
        }
        let address = try SocketAddress(ipAddress: String(self.target[..<colon]), port: port)
        let datagrams = try self.make()
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.so_sndbuf), value: 4 << 20)
            .bind(host: address.protocol == .inet6 ? "::" : "0.0.0.0", port: 0).get()
        var sent = 0
        for datagram in datagrams {
            try await channel.writeAndFlush(
                AddressedEnvelope(remoteAddress: address, data: ByteBuffer(bytes: datagram))
            )
            sent += 1
            if sent % self.rate == 0 { try await Task.sleep(for: .milliseconds(1)) }
        }
        try await channel.close()
        print("sent \(sent) \(self.kind.rawValue) datagrams to \(self.target)")
    }

    private func make() throws -> [[UInt8]] {
        var rng = SystemRandomNumberGenerator()
        let frame =
            [UInt8](repeating: 0xff, count: 6) + [0x52, 0x54, 0, 0xee, 0xee, 0xee, 0x88, 0xb5]
            + Array("injected".utf8)
        func header(_ sequence: UInt64) -> TunnelHeader {
            TunnelHeader(
                kind: .frame,
                vni: VNI(self.vni)!,
                source: PeerID(name: self.source),
                destination: PeerID(name: self.destination),
                session: 1,
                epoch: 0,
                keyID: 0,
                sequence: sequence
            )
        }
        func realKey() throws -> Keyring {
            guard let path = self.keyring else { throw ValidationError("--keyring is required for \(self.kind)") }
            return try Keyring.parse(String(contentsOfFile: path, encoding: .utf8), path: path)
        }
        switch self.kind {
        case .wrongkey:
            var crypto = TunnelCrypto(keyring: Keyring(keys: [SecretKey.generate()])!, clusterName: self.cluster)
            return (0..<self.count).map { crypto.sealed(header: header(UInt64($0)), payload: frame) }
        case .othercluster:
            var crypto = TunnelCrypto(keyring: try realKey(), clusterName: self.cluster)
            return (0..<self.count).map { crypto.sealed(header: header(UInt64($0)), payload: frame) }
        case .truncated:
            return (0..<self.count).map { i in
                var bytes = (0..<(i % (TunnelCrypto.overhead))).map { _ in UInt8.random(in: 0...255, using: &rng) }
                if !bytes.isEmpty { bytes[0] = TunnelHeader.currentVersion }
                return bytes
            }
        case .badversion:
            return (0..<self.count).map { _ in
                var bytes = (0..<Int.random(in: 64...1500, using: &rng)).map { _ in
                    UInt8.random(in: 0...255, using: &rng)
                }
                bytes[0] = UInt8.random(in: 2...255, using: &rng)
                return bytes
            }
        case .replay:
            var crypto = TunnelCrypto(keyring: try realKey(), clusterName: self.cluster)
            let datagram = crypto.sealed(header: header(0), payload: frame)
            return Array(repeating: datagram, count: self.count)
        }
    }
}
