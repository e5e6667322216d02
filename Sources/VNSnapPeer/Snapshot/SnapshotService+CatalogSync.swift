import Foundation
import Logging
import NIOPosix
import VNSnapCore

/// Catalog sync: every `catalogSyncInterval` a peer swaps the snapshot ids of its catalog (by state) with one
/// alive peer, so a peer that was down learns what it missed: a commit (it fetches the manifest), a deletion or
/// an abort (it deletes or aborts locally, dropping images and, as a store, replicas). A deletion wins over a
/// commit (the operator deleted it); a commit wins over an abort (only a superseded initiator's abort can
/// reach a peer once a successor committed, and a commit needed every holder's images durable).
extension SnapshotService {
    /// How often a peer swaps catalogs with another.
    static let catalogSyncInterval = Duration.seconds(15)
    /// Manifests asked for per sync round.
    static let manifestsPerRound = 16

    /// Sends this peer's summary to one alive peer (picked at random), asking for its summary back.
    func syncCatalog() async {
        guard let view = try? await self.membership.view(),
            let peer = view.alive.keys.filter({ $0 != self.me }).randomElement(),
            let blob = await self.catalogSummary()
        else { return }
        await self.membership.send(
            snapshot: Self.syncMessage(from: self.me, .catalog(reply: true, blob: blob)),
            to: peer
        )
    }

    /// A sync message (not about one snapshot: id 0).
    static func syncMessage(from: PeerID, id: UInt64 = 0, _ body: SnapshotMessage.Body) -> SnapshotMessage {
        SnapshotMessage(key: SnapshotKey(id: id, violin: "", epoch: 0, term: 0), from: from, body: body)
    }

    private func catalogSummary() async -> [UInt8]? {
        guard let states = try? await self.catalog.states(), let owners = try? await self.catalog.owners() else {
            return nil
        }
        let summary = CatalogSummary(
            committed: states["committed"] ?? [],
            deleted: states["deleted"] ?? [],
            aborted: states["aborted"] ?? [],
            owners: owners.values.sorted { $0.vm < $1.vm }
        )
        // A summary larger than one message would be refused: keep the newest that fit.
        var fitted = summary
        while let blob = try? JSONEncoder().encode(fitted), blob.count > SnapshotCodec.maximumBlobMessageSize - 200 {
            fitted.committed = Array(fitted.committed.prefix(fitted.committed.count * 3 / 4))
            fitted.deleted = Array(fitted.deleted.prefix(fitted.deleted.count * 3 / 4))
            fitted.aborted = Array(fitted.aborted.prefix(fitted.aborted.count * 3 / 4))
            fitted.owners = fitted.owners.map { Array($0.prefix($0.count * 3 / 4)) }
        }
        return (try? JSONEncoder().encode(fitted)).map(Array.init)
    }

    func catalogMessage(_ message: SnapshotMessage) async {
        switch message.body {
        case .catalog(let reply, let blob):
            if reply, let mine = await self.catalogSummary() {
                await self.membership.send(
                    snapshot: Self.syncMessage(from: self.me, .catalog(reply: false, blob: mine)),
                    to: message.from
                )
            }
            guard let theirs = try? JSONDecoder().decode(CatalogSummary.self, from: Data(blob)) else {
                self.logger.warning("Unreadable catalog summary", metadata: ["peer.id": "\(message.from)"])
                return
            }
            await self.learnOwners(theirs.owners ?? [])
            await self.ownershipHeardForFence(now: .now)
            if self.ownershipHeard == nil {
                self.ownershipHeard = .now
                self.logger.info("Heard the cluster's ownership records", metadata: ["peer.id": "\(message.from)"])
            }
            await self.reconcile(theirs, from: message.from)
        case .manifestWanted:
            guard let entry = try? await self.catalog.entry(message.key.id), entry.state == "committed",
                let document = try? entry.manifest?.encoded()
            else { return }
            await self.membership.send(
                snapshot: Self.syncMessage(from: self.me, id: message.key.id, .manifest(Array(document))),
                to: message.from
            )
        case .manifest(let blob):
            let id = message.key.id
            guard (try? await self.catalog.entry(id))??.state != "committed" else { return }
            do {
                let manifest = try SnapshotManifest.decode(Data(blob), source: "catalog sync, snapshot \(id)")
                guard manifest.id == id else {
                    throw SnapshotError(.corrupt, "the manifest is of snapshot \(manifest.id)")
                }
                try await self.catalog.commit(manifest, document: Data(blob))
                self.logger.notice("Learned a commit missed while away", metadata: ["snapshot.id": "\(id)"])
            } catch {
                self.logger.warning(
                    "Unusable manifest from catalog sync",
                    metadata: ["snapshot.id": "\(id)", "snapshot.error": "\(error)"]
                )
            }
        default:
            break
        }
    }

    /// Acts on another peer's summary (`CatalogReconciliation`): deletions and aborts it knows of, commits to fetch.
    private func reconcile(_ theirs: CatalogSummary, from peer: PeerID) async {
        guard let states = try? await self.catalog.states(limit: 100_000) else { return }
        let mine = Dictionary(states.flatMap { state, ids in ids.map { ($0, state) } }, uniquingKeysWith: { a, _ in a })
        let running = Set((theirs.committed + theirs.deleted + theirs.aborted).filter { self.isRunning($0) })
        var generator = SystemRandomNumberGenerator()
        let plan = CatalogReconciliation.reconcile(
            theirs,
            mine: mine,
            running: running,
            limit: Self.manifestsPerRound,
            using: &generator
        )
        for id in plan.delete {
            self.logger.notice("Deleting a snapshot deleted while away", metadata: ["snapshot.id": "\(id)"])
            await self.deleteLocally(id)
        }
        for id in plan.abort {
            self.logger.notice("Aborting a snapshot aborted while away", metadata: ["snapshot.id": "\(id)"])
            _ = try? await self.catalog.abort(id, reason: "aborted while this peer was away")
            await Self.removeFiles(self.directory(id))
        }
        for id in plan.keptCommitted {
            self.logger.warning(
                "A peer has aborted a snapshot committed here; keeping it (it will learn the commit)",
                metadata: ["snapshot.id": "\(id)", "peer.id": "\(peer)"]
            )
        }
        // A few manifests per round: each answer is one large datagram.
        for id in plan.wanted {
            await self.membership.send(snapshot: Self.syncMessage(from: self.me, id: id, .manifestWanted), to: peer)
        }
    }

    /// Removes the local files of snapshots the catalog has as aborted or deleted and that no longer run here: what a
    /// clean-up missed (a peer killed half-way through one, a write that raced an abort) must not stay for good.
    func sweepEndedSnapshots() async {
        let root = "\(self.config.peer.dataDirectory)/snapshots"
        let names =
            (try? await NIOThreadPool.singleton.runIfActive {
                try FileManager.default.contentsOfDirectory(atPath: root)
            }) ?? []
        let ids = names.compactMap { UInt64($0) }
        guard !ids.isEmpty, let states = try? await self.catalog.states(limit: 100_000) else { return }
        let ended = Set((states["aborted"] ?? []) + (states["deleted"] ?? []))
        for id in ids where ended.contains(id) && !self.isRunning(id) {
            self.logger.notice("Removing the files left of an ended snapshot", metadata: ["snapshot.id": "\(id)"])
            await Self.removeFiles(self.directory(id))
        }
    }

    /// Whether snapshot `id` is still under way here (its outcome is the protocol's, not the sync's).
    private func isRunning(_ id: UInt64) -> Bool {
        (self.participants[id].map { $0.ended == nil } ?? false)
            || (self.initiator.runs[id].map { $0.finished == nil } ?? false)
    }
}
