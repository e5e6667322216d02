import Foundation
import Logging
import NIOCore
import NIOPosix
import VNSnapCore
import VNSnapCrypto
import VNSnapImage

/// Memory targets (DESIGN §7, VNsnap-memory): where each local VM's replicas go, the channel logs copied to the
/// same stores, images fetched back for a restore, and replicas dropped with their snapshot.
extension SnapshotService {
    /// The room one replica of `vm`'s image needs: its RAM (the stream's upper bound before compression), with
    /// a margin for device state and incompressible chunks.
    func replicaBytes(_ vm: String) -> UInt64 {
        let ram = UInt64(self.hosted.definition(vm)?.memoryMiB ?? 128) << 20
        return ram + ram / 64 + (16 << 20)
    }

    typealias StoreTarget = ReplicaUploader.StoreTarget

    /// For a memory target: each VM's stores by rendezvous placement over the alive store peers (never this
    /// peer when another has room), and the other stores with room in preference order, to stand in for one
    /// that refuses its replica; empty for a disk target. Throws when the stores cannot take the images.
    func placeReplicas(_ vms: [String], target: SnapshotTarget) async throws -> [String: (
        chosen: [StoreTarget], spares: [StoreTarget]
    )] {
        guard target.kind == .memory, !vms.isEmpty else { return [:] }
        let view = try await self.membership.view()
        var addresses: [PeerID: StoreTarget] = [:]
        var candidates: [ReplicaPlacement.Store] = []
        for (peer, store) in view.stores {
            guard let route = self.storeRoute(peer, store) else { continue }
            addresses[peer] = (store.name, route)
            candidates.append(ReplicaPlacement.Store(peer: peer, name: store.name, freeBytes: store.capacity))
        }
        let images = vms.map { ReplicaPlacement.Image(vm: $0, host: self.me, bytes: self.replicaBytes($0)) }
        let placed: [String: [PeerID]]
        do {
            placed = try ReplicaPlacement.place(images, stores: candidates, replicas: target.replicas)
        } catch {
            throw SnapshotError(.failed, "\(error)")
        }
        var result: [String: (chosen: [StoreTarget], spares: [StoreTarget])] = [:]
        for image in images {
            let chosen = placed[image.vm] ?? []
            let spares = ReplicaPlacement.order(vm: image.vm, host: self.me, stores: candidates.map(\.peer)).filter {
                !chosen.contains($0) && (view.stores[$0]?.capacity ?? 0) >= image.bytes
            }
            result[image.vm] = (chosen.compactMap { addresses[$0] }, spares.compactMap { addresses[$0] })
        }
        return result
    }

    /// How to reach the store peer `name` as `view` knows it.
    func storeRoute(_ name: String, in view: MembershipView?) -> StoreRoute? {
        let peer = PeerID(name: name)
        return view?.stores[peer].flatMap { self.storeRoute(peer, $0) }
    }

    /// How to reach a store peer's image store: two ports above its tunnel, or through its relays (tried first
    /// when it sits behind a NAT).
    func storeRoute(_ peer: PeerID, _ store: MembershipView.Store) -> StoreRoute? {
        let direct = HostPort(store.tunnelAddress).flatMap {
            try? SocketAddress(ipAddress: $0.host, port: StoreService.port(tunnelPort: $0.port))
        }
        let relays = store.relays.compactMap { HostPort($0) }.compactMap {
            try? SocketAddress(ipAddress: $0.host, port: $0.port)
        }
        guard direct != nil || !relays.isEmpty else { return nil }
        return StoreRoute(
            direct: direct,
            relays: relays,
            relaysFirst: store.behindNAT,
            store: peer,
            me: self.me,
            tickets: PeerDaemon.spliceTickets(self.config, self.keyring())
        )
    }

    /// Copies a VM's channel log (already on the local disk) to its stores.
    func replicateChannelLog(
        _ id: UInt64,
        vm: String,
        chunks: [SnapshotManifest.ChunkDescriptor],
        from store: LocalChunkStore,
        to stores: [StoreTarget]
    ) async throws {
        let data = try await NIOThreadPool.singleton.runIfActive { try chunks.map { ($0, try store.verified($0)) } }
        let keyring = self.keyring()
        for target in stores {
            do {
                try await StoreClient.put(
                    ReplicaKey(snapshot: id, vm: vm, kind: .channel),
                    reserve: chunks.reduce(0) { $0 + $1.storedBytes },
                    chunks: data,
                    to: target.route,
                    key: keyring.primary,
                    keys: { keyring.key(id: $0) }
                )
            } catch {
                throw SnapshotError(.failed, "VM \(vm): channel log to store \(target.name): \(error)")
            }
        }
    }

    /// Before a restore's verify: fills in from a replica every chunk of `vm`'s image this peer lacks, trying the
    /// manifest's stores in order (each fetched chunk is checked against the catalog's chunk list).
    func fetchMissing(_ manifest: SnapshotManifest, vm: String, kind: ImageKind, into store: LocalChunkStore)
        async throws
    {
        // A disk target's image is only here: a missing chunk is for verify to report.
        guard manifest.vms.first(where: { $0.name == vm })?.replicas?.isEmpty == false,
            let held = try await self.catalog.image(snapshot: manifest.id, vm: vm, kind: kind)
        else { return }
        let missing = held.chunks.filter { !FileManager.default.fileExists(atPath: store.path(of: $0.index)) }
        guard !missing.isEmpty else { return }
        let expected = Dictionary(uniqueKeysWithValues: held.chunks.map { ($0.index, $0) })
        _ = try await self.fetchReplica(
            manifest,
            vm: vm,
            kind: kind,
            into: store,
            check: { chunk in
                guard expected[chunk.index] == chunk else {
                    throw SnapshotError(.corrupt, "chunk \(chunk.index) is not the committed one")
                }
            },
            accept: { list in
                guard list == held.chunks else {
                    throw SnapshotError(.corrupt, "its chunk list is not the committed one")
                }
            }
        )
    }

    /// A restore placing `vm` here although it ran on a lost peer: fetches its whole image of `kind` from a
    /// replica into `directory` (each chunk checked against its hash as it comes, the list against the manifest's
    /// digest at the end) and records it in the catalog, so the rest of the restore finds it like a local one.
    func fetchWhole(_ manifest: SnapshotManifest, vm: String, kind: ImageKind, directory: String) async throws {
        guard try await self.catalog.image(snapshot: manifest.id, vm: vm, kind: kind) == nil else { return }
        guard let entry = manifest.vms.first(where: { $0.name == vm }),
            let descriptor = kind == .memory ? entry.image : manifest.channels.first(where: { $0.vm == vm })?.image
        else { throw SnapshotError(.notFound, "snapshot \(manifest.id) has no VM \(vm)") }
        guard let replicas = entry.replicas, !replicas.isEmpty else {
            throw SnapshotError(
                .failed,
                "snapshot \(manifest.id), VM \(vm): its images are on the disk of \(entry.peer), which is not alive (a snapshot taken with --target memory keeps them on store peers)"
            )
        }
        let store = LocalChunkStore(directory: directory, label: "snapshot \(manifest.id), VM \(vm)")
        let list = try await self.fetchReplica(
            manifest,
            vm: vm,
            kind: kind,
            into: store,
            fresh: true,
            check: { chunk in
                guard chunk.index < descriptor.chunkCount else {
                    throw SnapshotError(.corrupt, "chunk \(chunk.index) is not in the image")
                }
            },
            accept: { list in
                guard list.count == descriptor.chunkCount,
                    list.enumerated().allSatisfy({ $0.offset == $0.element.index }),
                    ImageStreamFeeder.digest(of: list) == descriptor.digest
                else { throw SnapshotError(.corrupt, "its chunk list is not the committed one") }
            }
        )
        try await self.catalog.recordImage(
            snapshot: manifest.id,
            vm: vm,
            kind: kind,
            replicas: replicas.map { (peer: $0, location: "ram") },
            directory: directory,
            chunks: list
        )
    }

    /// Streams `vm`'s replica of `kind` into `store` from the first of the manifest's stores that serves it whole:
    /// chunk by chunk (one in memory), each checked by `check` and against its hash as it comes (a damaged one
    /// sends the fetch to the next replica; the store checks too), the list by `accept` at the end. `fresh`
    /// empties the store before each try, so one replica's chunks never mix with another's.
    private func fetchReplica(
        _ manifest: SnapshotManifest,
        vm: String,
        kind: ImageKind,
        into store: LocalChunkStore,
        fresh: Bool = false,
        check: @escaping @Sendable (SnapshotManifest.ChunkDescriptor) throws -> Void,
        accept: ([SnapshotManifest.ChunkDescriptor]) throws -> Void
    ) async throws -> [SnapshotManifest.ChunkDescriptor] {
        let replicas = manifest.vms.first(where: { $0.name == vm })?.replicas ?? []
        let view = try await self.membership.view()
        let keyring = self.keyring()
        var problems: [String] = []
        for name in replicas {
            guard let address = self.storeRoute(name, in: view) else {
                problems.append("\(name): not alive")
                continue
            }
            do {
                if fresh { try? FileManager.default.removeItem(atPath: store.directory) }
                try FileManager.default.createDirectory(atPath: store.directory, withIntermediateDirectories: true)
                let list = try await StoreClient.get(
                    ReplicaKey(snapshot: manifest.id, vm: vm, kind: kind),
                    from: address,
                    key: keyring.primary,
                    keys: { keyring.key(id: $0) }
                ) { chunk, data in
                    try check(chunk)
                    guard UInt64(data.count) == chunk.storedBytes, LocalChunkStore.hash(data) == chunk.hash else {
                        throw SnapshotError(.corrupt, "chunk \(chunk.index) does not match its hash")
                    }
                    try await NIOThreadPool.singleton.runIfActive { try store.writeStored(chunk, data: data) }
                }
                try accept(list)
                return list
            } catch {
                problems.append("\(name): \(error)")
                self.logger.warning(
                    "A replica could not serve; trying the next",
                    metadata: [
                        "replica": "\(ReplicaKey(snapshot: manifest.id, vm: vm, kind: kind))", "store.name": "\(name)",
                        "store.error": "\(error)",
                    ]
                )
            }
        }
        let what = kind == .channel ? "channel log" : "image"
        throw SnapshotError(
            .failed,
            "snapshot \(manifest.id), VM \(vm): no replica of its \(what) could be fetched (\(problems.isEmpty ? "no replicas" : problems.joined(separator: "; ")))"
        )
    }

    /// Where each store of the manifest holds each VM's image: VM → store → `RAM`, `disk`, `RAM and disk`,
    /// `missing` or why it could not be asked (`show`).
    public func replicaLocations(_ manifest: SnapshotManifest) async -> [String: [String: String]] {
        let stores = Set(manifest.vms.flatMap { $0.replicas ?? [] })
        guard !stores.isEmpty else { return [:] }
        let view = try? await self.membership.view()
        let keyring = self.keyring()
        var answers: [String: Result<[HeldReplica], SnapshotError>] = [:]
        for name in stores.sorted() {
            guard let address = self.storeRoute(name, in: view) else {
                answers[name] = .failure(SnapshotError(.notFound, "not alive"))
                continue
            }
            do {
                // A store that accepts the connection but never answers must not hold `show` up.
                answers[name] = .success(
                    try await withThrowingTaskGroup(of: [HeldReplica].self) { group in
                        group.addTask {
                            try await StoreClient.stat(
                                snapshot: manifest.id,
                                at: address,
                                key: keyring.primary,
                                keys: { keyring.key(id: $0) }
                            )
                        }
                        group.addTask {
                            try await Task.sleep(for: .seconds(3))
                            throw SnapshotError(.timeout, "no answer in 3 s")
                        }
                        defer { group.cancelAll() }
                        return try await group.next()!  // !-safe: two tasks were added
                    }
                )
            } catch {
                answers[name] = .failure(SnapshotError(.failed, "unreachable: \(error)"))
            }
        }
        var result: [String: [String: String]] = [:]
        for vm in manifest.vms {
            for name in vm.replicas ?? [] {
                switch answers[name] {
                case .success(let held)?:
                    let replica = held.first { $0.key == ReplicaKey(snapshot: manifest.id, vm: vm.name, kind: .memory) }
                    result[vm.name, default: [:]][name] = replica?.location ?? "missing"
                case .failure(let error)?: result[vm.name, default: [:]][name] = error.message
                case nil: break
                }
            }
        }
        return result
    }

    /// Drops snapshot `id`'s replicas on the store peers `names` (best effort; returns those not reached).
    func dropReplicas(snapshot id: UInt64, on names: Set<String>) async -> [String] {
        guard !names.isEmpty else { return [] }
        guard let view = try? await self.membership.view() else { return names.sorted() }
        let keyring = self.keyring()
        var unreached: [String] = []
        for name in names.sorted() {
            guard let address = self.storeRoute(name, in: view) else {
                unreached.append(name)
                continue
            }
            do {
                try await StoreClient.drop(
                    snapshot: id,
                    at: address,
                    key: keyring.primary,
                    keys: { keyring.key(id: $0) }
                )
            } catch {
                unreached.append(name)
            }
        }
        return unreached
    }
}
