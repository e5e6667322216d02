import ArgumentParser
import Foundation
import Logging
import NIOCore
import Synchronization
import VNSnapCore
import VNSnapCrypto
import VNSnapImage
import VNSnapPeer

/// `vnsnap-bench store-splice`: a replica put into a real store over loopback TCP, straight to the store and
/// through a relay's splice (the store dialing the relay back), side by side: throughput and connection set-up.
struct StoreSpliceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store-splice",
        abstract: "Measure store streams through a relay's splice against straight to the store (loopback TCP)."
    )

    @Option(help: "Rounds; each puts the replica once each way, in turn. Medians are over rounds.")
    var rounds: Int = 5
    @Option(help: "MiB of replica per put (1 MiB chunks of incompressible bytes).")
    var mib: Int = 256

    func run() async throws {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let directory = "/tmp/vnsnap-bench-splice-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let key = SecretKey.generate()
        let tickets = TunnelCrypto(keyring: Keyring(keys: [key])!, clusterName: "bench", purpose: "splice")
        let store = ReplicaStore(directory: directory, ramBudget: UInt64(self.mib + 64) << 20)
        let server = try await StoreServer.bind(
            host: "127.0.0.1",
            port: 0,
            store: store,
            keys: { (primary: key, byID: [key.keyID: key]) },
            logger: logger
        )
        let serving = Task { try await server.run() }
        defer { serving.cancel() }
        let storeID = PeerID(name: "store")
        let relay = try await SpliceRelay.bind(
            host: "127.0.0.1",
            port: 0,
            tickets: { tickets },
            dial: { _, token, port in
                let answer = SpliceTicket(role: .answer, from: storeID, to: PeerID(rawValue: 0), token: token)
                let address = try! SocketAddress(ipAddress: "127.0.0.1", port: port)  // !-safe, a literal address
                Task { await server.dialBack(relay: address, answer: answer.encode(crypto: tickets)) }
                return nil
            },
            logger: logger
        )
        let relaying = Task { try await relay.run() }
        defer { relaying.cancel() }
        var generator = SystemRandomNumberGenerator()
        let chunks = (0..<self.mib).map { index in
            LocalChunkStore.compress(
                index: index,
                raw: (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            )
        }
        let routes = [
            ("straight to the store", StoreRoute.direct(server.address)),
            (
                "through a relay's splice",
                StoreRoute(
                    direct: nil,
                    relays: [relay.address],
                    relaysFirst: true,
                    store: storeID,
                    me: PeerID(name: "sender"),
                    tickets: tickets
                )
            ),
        ]
        var seconds: [String: [Double]] = [:]
        var setup: [String: [Double]] = [:]
        for round in 1...self.rounds {
            for (index, (label, route)) in routes.enumerated() {
                let replica = ReplicaKey(snapshot: UInt64(round * 10 + index), vm: "bench", kind: .memory)
                let started = ContinuousClock.now
                let firstAck = FirstInstant()
                let (stream, feed) = AsyncStream<(SnapshotManifest.ChunkDescriptor, [UInt8])>.makeStream()
                for chunk in chunks { feed.yield(chunk) }
                feed.finish()
                try await StoreClient.put(
                    replica,
                    reserve: UInt64(chunks.reduce(0) { $0 + $1.1.count }),
                    chunks: stream,
                    to: route,
                    key: key,
                    keys: { $0 == key.keyID ? key : nil },
                    accepted: { firstAck.set(ContinuousClock.now) }
                )
                let total = started.duration(to: .now)
                seconds[label, default: []].append(total.seconds)
                setup[label, default: []].append(firstAck.get().map { started.duration(to: $0).seconds } ?? .nan)
                try await StoreClient.drop(
                    snapshot: replica.snapshot,
                    at: route,
                    key: key,
                    keys: { $0 == key.keyID ? key : nil }
                )
                FileHandle.standardError.write(Data("round \(round) \(label): \(total)\n".utf8))
            }
        }
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        let straight = median(seconds[routes[0].0] ?? [1])
        print("| route | throughput (median) | put \(self.mib) MiB (median) | accepted after (median) | vs straight |")
        print("|---|---|---|---|---|")
        for (label, _) in routes {
            let t = median(seconds[label] ?? [1])
            let s = median(setup[label] ?? [0])
            print(
                "| \(label) | \(String(format: "%.0f", Double(self.mib) / t)) MiB/s | \(String(format: "%.3f", t)) s "
                    + "| \(String(format: "%.1f", s * 1000)) ms | \(String(format: "%.2f", straight / t)) |"
            )
        }
        print("\nrelay: \(relay.status.joined) splices joined, \(relay.status.bytes >> 20) MiB copied")
    }
}

/// The instant a put was accepted, set from the client's callback.
final class FirstInstant: Sendable {
    private let value = Mutex<ContinuousClock.Instant?>(nil)
    func set(_ instant: ContinuousClock.Instant) { self.value.withLock { $0 = $0 ?? instant } }
    func get() -> ContinuousClock.Instant? { self.value.withLock { $0 } }
}

extension Duration {
    fileprivate var seconds: Double {
        Double(self.components.seconds) + Double(self.components.attoseconds) / 1e18
    }
}
