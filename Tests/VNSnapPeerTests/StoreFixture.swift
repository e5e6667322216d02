import Foundation
import Logging
import VNSnapCore
import VNSnapCrypto
import VNSnapImage
import VNSnapPeer

/// Real stores on loopback for in-process tests: each a `ReplicaStore` in its own directory behind a
/// `StoreServer`, all under one key; `stop` cancels them and removes their files.
struct StoreFixture {
    let key = SecretKey.generate()
    let directory = NSTemporaryDirectory() + "vnsnap-stores-\(UUID().uuidString.prefix(8))"
    var stores: [(store: ReplicaStore, server: StoreServer, task: Task<Void, any Error>)] = []

    /// Starts one store per budget.
    static func start(budgets: [UInt64]) async throws -> StoreFixture {
        var fixture = StoreFixture()
        let key = fixture.key
        for (index, budget) in budgets.enumerated() {
            let store = ReplicaStore(directory: "\(fixture.directory)/store\(index)", ramBudget: budget)
            let server = try await StoreServer.bind(
                host: "127.0.0.1",
                port: 0,
                store: store,
                keys: { (primary: key, byID: [key.keyID: key]) },
                logger: Logger(label: "test")
            )
            fixture.stores.append((store, server, Task { try await server.run() }))
        }
        return fixture
    }

    /// The keyring lookup of a client holding `key`.
    static func keys(_ key: SecretKey) -> @Sendable (UInt32) -> SecretKey? { { $0 == key.keyID ? key : nil } }

    func stop() {
        for store in self.stores { store.task.cancel() }
        try? FileManager.default.removeItem(atPath: self.directory)
    }
}
