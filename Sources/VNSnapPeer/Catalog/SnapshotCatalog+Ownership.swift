import GRDB
import VNSnapCore

/// The ownership records of VMs (issue 14): written by the initiator when a restore moves VMs, merged from other
/// peers by catalog sync; a record only ever gives way to one that supersedes it.
extension SnapshotCatalog {
    /// Every record, by VM.
    public func owners() async throws -> [String: VMOwnership] {
        try await self.queue.read { db in
            try Self.owners(in: db)
        }
    }

    /// Merges `records` (`VMOwnership.merge`): keeps those that supersede what is recorded, in one transaction, and
    /// returns them.
    @discardableResult
    public func recordOwners(_ records: [VMOwnership]) async throws -> [VMOwnership] {
        try await self.queue.write { db in
            let changed = VMOwnership.merge(records, into: try Self.owners(in: db))
            for record in changed {
                try db.execute(
                    sql: """
                        INSERT INTO owners (vm, violin, owner, generation, term) VALUES (?, ?, ?, ?, ?)
                        ON CONFLICT(vm) DO UPDATE SET violin = excluded.violin, owner = excluded.owner,
                            generation = excluded.generation, term = excluded.term
                        """,
                    arguments: [
                        record.vm, record.violin, record.owner, Int64(bitPattern: record.generation),
                        Int64(bitPattern: record.term),
                    ]
                )
            }
            return changed
        }
    }

    private static func owners(in db: Database) throws -> [String: VMOwnership] {
        let rows = try Row.fetchAll(db, sql: "SELECT vm, violin, owner, generation, term FROM owners")
        return Dictionary(
            uniqueKeysWithValues: rows.map { row in
                let vm: String = row["vm"]
                let generation: Int64 = row["generation"]
                let term: Int64 = row["term"]
                return (
                    vm,
                    VMOwnership(
                        vm: vm,
                        violin: row["violin"],
                        owner: row["owner"],
                        generation: UInt64(bitPattern: generation),
                        term: UInt64(bitPattern: term)
                    )
                )
            }
        )
    }
}
