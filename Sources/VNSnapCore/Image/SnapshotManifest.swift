import Foundation

/// The manifest of a committed snapshot (DESIGN §7): what the snapshot holds and how to verify every byte of
/// it, as a versioned JSON document. Written by the initiator at the commit point; a snapshot without a
/// readable manifest of a known version does not exist.
///
/// Layout (JSON, keys sorted):
/// ```
/// { "format": "vnsnap-manifest", "version": 1,
///   "id": 7, "name": "before-upgrade", "violin": "pipeline", "vni": 42, "epoch": 1, "term": 3, "mode": "cow",
///   "createdAtNanoseconds": ..., "initiator": "h0",
///   "vms": [ { "name": "sink", "peer": "h1", "cut": { VMCutReport }, "image": { ImageDescriptor },
///              "measurements": { VMMeasurements }, "disk": [ DiskLayer ], "diskBacking": { "files": 2, "digest": "..." },
///              "replicas": [ "s1", "s2" ], "definition": { VMDefinition } } ],
///   "channels": [ { "vm": "sink", "frames": 12, "bytes": 17880, "drained": true, "image": { ImageDescriptor } } ] }
/// ImageDescriptor = { "chunkCount": 24, "rawBytes": ..., "storedBytes": ..., "digest": "<BLAKE2b-256 hex>" }
/// DiskLayer = { "path": "/data/disks/db/snapshot-7-....qcow2", "format": "qcow2", "bytes": ..., "digest": "..." }
/// ```
/// `disk` is absent for a VM without a disk; it holds the image frozen at the cut, and `diskBacking` pins that
/// image's backing chain with one digest (the VM's peer keeps them all: a frozen image is never written again).
/// The chunk lists themselves stay in the catalogs of the peers holding the images; each descriptor's digest
/// is computed over its list (`ImageDescriptor.digestInput`), so a restore checks the list, then every chunk.
public struct SnapshotManifest: Sendable, Hashable, Codable {
    /// The only version this build reads and writes.
    public static let currentVersion = 1
    /// Marks the document as a manifest.
    public static let formatName = "vnsnap-manifest"

    /// One chunk of an image or channel log: where it sits in the stream and how to check it.
    public struct ChunkDescriptor: Sendable, Hashable, Codable {
        /// Position in the stream, from 0.
        public var index: Int
        /// Bytes before compression.
        public var rawBytes: UInt64
        /// Bytes as stored (zstd).
        public var storedBytes: UInt64
        /// BLAKE2b-256 of the stored bytes, hex.
        public var hash: String

        /// Creates a descriptor.
        public init(index: Int, rawBytes: UInt64, storedBytes: UInt64, hash: String) {
            self.index = index
            self.rawBytes = rawBytes
            self.storedBytes = storedBytes
            self.hash = hash
        }
    }

    /// A VM's memory (and device) image, or a channel log: its chunk list stays with the peers holding it,
    /// and `digest` pins that list, so a holder cannot serve other chunks than the ones committed.
    public struct ImageDescriptor: Sendable, Hashable, Codable {
        /// Chunks in the image.
        public var chunkCount: Int
        /// Bytes before compression.
        public var rawBytes: UInt64
        /// Bytes as stored.
        public var storedBytes: UInt64
        /// BLAKE2b-256 over the chunk list (each chunk's index, sizes and hash), hex.
        public var digest: String

        /// Creates a descriptor.
        public init(chunkCount: Int, rawBytes: UInt64, storedBytes: UInt64, digest: String) {
            self.chunkCount = chunkCount
            self.rawBytes = rawBytes
            self.storedBytes = storedBytes
            self.digest = digest
        }

        /// The text a chunk list's digest is computed over: one line per chunk, in order.
        public static func digestInput(_ chunks: [ChunkDescriptor]) -> [UInt8] {
            Array(chunks.map { "\($0.index) \($0.rawBytes) \($0.storedBytes) \($0.hash)\n" }.joined().utf8)
        }
    }

    /// One file of a VM's disk as frozen at the cut (read-only from then on), on the VM's peer.
    public struct DiskLayer: Sendable, Hashable, Codable {
        /// The image file.
        public var path: String
        /// `qcow2` or `raw`.
        public var format: String
        /// Its size.
        public var bytes: UInt64
        /// BLAKE2b-256 of the whole file, hex.
        public var digest: String

        /// Creates a layer.
        public init(path: String, format: String, bytes: UInt64, digest: String) {
            self.path = path
            self.format = format
            self.bytes = bytes
            self.digest = digest
        }
    }

    /// The files below a frozen disk image (its backing chain), pinned by one digest so the manifest stays
    /// small however long the chain grows.
    public struct DiskBacking: Sendable, Hashable, Codable {
        /// Files in the chain below the frozen image.
        public var files: Int
        /// BLAKE2b-256 over one line per file, in chain order: `path format bytes digest`.
        public var digest: String

        /// Creates a summary.
        public init(files: Int, digest: String) {
            self.files = files
            self.digest = digest
        }

        /// The text the digest is computed over.
        public static func digestInput(_ layers: [DiskLayer]) -> [UInt8] {
            Array(layers.map { "\($0.path) \($0.format) \($0.bytes) \($0.digest)\n" }.joined().utf8)
        }
    }

    /// What DESIGN §8 asks to record per VM, in nanoseconds and frames.
    public struct VMMeasurements: Sendable, Hashable, Codable {
        /// How long the VM ran while its snapshot was taken.
        public var uptime: UInt64
        /// Paused (STOP to RESUME).
        public var downtime: UInt64
        /// Longest gap in its payload frames around the snapshot, seen by its switch.
        public var stall: UInt64
        /// Its cut time minus the earliest cut of the VIOLIN.
        public var cutSkew: UInt64
        /// Frames held, dropped and recorded by its epoch gate.
        public var held: UInt64
        /// Frames dropped.
        public var dropped: UInt64
        /// Frames recorded as channel state.
        public var recorded: UInt64
        /// From its cut until its image was durable.
        public var timeToDurable: UInt64
        /// Where the stall began relative to the cut (negative: before it), to tell a stall at the pause from
        /// one while the image streams.
        public var stallStartAfterCut: Int64?

        /// Creates measurements.
        public init(
            uptime: UInt64,
            downtime: UInt64,
            stall: UInt64,
            cutSkew: UInt64,
            held: UInt64,
            dropped: UInt64,
            recorded: UInt64,
            timeToDurable: UInt64,
            stallStartAfterCut: Int64? = nil
        ) {
            self.uptime = uptime
            self.downtime = downtime
            self.stall = stall
            self.cutSkew = cutSkew
            self.held = held
            self.dropped = dropped
            self.recorded = recorded
            self.timeToDurable = timeToDurable
            self.stallStartAfterCut = stallStartAfterCut
        }

        /// TCP backoff: the stall beyond the pause (the paper's term).
        public var tcpBackoff: UInt64 { self.stall > self.downtime ? self.stall - self.downtime : 0 }
        /// Disruption = downtime + TCP backoff (the paper's headline metric).
        public var disruption: UInt64 { self.downtime + self.tcpBackoff }
    }

    /// One VM of the snapshot.
    public struct VM: Sendable, Hashable, Codable {
        /// Name.
        public var name: String
        /// The peer it ran on.
        public var peer: String
        /// Its cut.
        public var cut: VMCutReport
        /// Its image.
        public var image: ImageDescriptor
        /// Its measurements.
        public var measurements: VMMeasurements
        /// Its disk at the cut, if it has one: the image frozen at the cut (read-only from then on).
        public var disk: [DiskLayer]?
        /// The frozen image's backing files (down to the configured disk), if it has any.
        public var diskBacking: DiskBacking?
        /// The store peers holding replicas of its images (memory targets), in placement order; `nil`: on `peer`.
        public var replicas: [String]?
        /// The VM's definition (its configured disk), so a restore can run it on another peer when `peer` is lost.
        public var definition: VMDefinition?
        /// The id of the cluster key its image and channel log were sealed under at rest; `nil`: written unsealed
        /// (before sealing existed).
        public var sealedWith: UInt32?

        /// Creates an entry.
        public init(
            name: String,
            peer: String,
            cut: VMCutReport,
            image: ImageDescriptor,
            measurements: VMMeasurements,
            disk: [DiskLayer]? = nil,
            diskBacking: DiskBacking? = nil,
            replicas: [String]? = nil,
            definition: VMDefinition? = nil,
            sealedWith: UInt32? = nil
        ) {
            self.sealedWith = sealedWith
            self.name = name
            self.peer = peer
            self.cut = cut
            self.image = image
            self.measurements = measurements
            self.disk = disk
            self.diskBacking = diskBacking
            self.replicas = replicas
            self.definition = definition
        }
    }

    /// The recorded frames in flight toward one VM at the cut, replayed on restore.
    public struct ChannelLog: Sendable, Hashable, Codable {
        /// The receiving VM.
        public var vm: String
        /// Frames recorded.
        public var frames: UInt64
        /// Their bytes.
        public var bytes: UInt64
        /// The stored log (records of `length:u32 frame`), held by the VM's peer.
        public var image: ImageDescriptor
        /// Whether every channel into the VM was drained (markers matched) when the log was closed.
        public var drained: Bool

        /// Creates a log entry.
        public init(vm: String, frames: UInt64, bytes: UInt64, image: ImageDescriptor, drained: Bool) {
            self.vm = vm
            self.frames = frames
            self.bytes = bytes
            self.image = image
            self.drained = drained
        }
    }

    /// Always `formatName`.
    public var format: String = Self.formatName
    /// Always `currentVersion` when written by this build.
    public var version: Int = Self.currentVersion
    /// Snapshot id.
    public var id: UInt64
    /// Operator's name for it.
    public var name: String
    /// The VIOLIN.
    public var violin: String
    /// Its VNI.
    public var vni: UInt32
    /// The epoch its VMs moved to.
    public var epoch: UInt32
    /// The initiator's term.
    public var term: UInt64
    /// How it was cut.
    public var mode: SnapshotMode
    /// When it committed (wall clock, nanoseconds since 1970).
    public var createdAtNanoseconds: UInt64
    /// The initiator's name.
    public var initiator: String
    /// Every VM, by name.
    public var vms: [VM]
    /// Channel state per receiving VM.
    public var channels: [ChannelLog]

    /// Creates a manifest of the current version.
    public init(
        key: SnapshotKey,
        name: String,
        vni: UInt32,
        mode: SnapshotMode,
        createdAtNanoseconds: UInt64,
        initiator: String,
        vms: [VM],
        channels: [ChannelLog]
    ) {
        self.id = key.id
        self.name = name
        self.violin = key.violin
        self.vni = vni
        self.epoch = key.epoch
        self.term = key.term
        self.mode = mode
        self.createdAtNanoseconds = createdAtNanoseconds
        self.initiator = initiator
        self.vms = vms.sorted { $0.name < $1.name }
        self.channels = channels.sorted { $0.vm < $1.vm }
    }

    /// The document, as stored.
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    /// Reads a stored manifest; refuses anything that is not a manifest of this version, naming the problem.
    public static func decode(_ data: Data, source: String) throws(ManifestError) -> SnapshotManifest {
        struct Header: Decodable {
            var format: String?
            var version: Int?
        }
        guard let header = try? JSONDecoder().decode(Header.self, from: data) else {
            throw ManifestError(source: source, message: "not a JSON object")
        }
        guard header.format == Self.formatName else {
            throw ManifestError(source: source, message: "not a vnsnap manifest (format \(header.format ?? "missing"))")
        }
        guard header.version == Self.currentVersion else {
            throw ManifestError(
                source: source,
                message:
                    "manifest version \(header.version.map(String.init) ?? "missing"); this build reads version \(Self.currentVersion)"
            )
        }
        do {
            return try JSONDecoder().decode(SnapshotManifest.self, from: data)
        } catch {
            throw ManifestError(source: source, message: "damaged: \(error)")
        }
    }
}

/// A manifest that cannot be used, naming where it came from and why.
public struct ManifestError: Error, Hashable, Sendable, CustomStringConvertible {
    /// File or peer it came from.
    public var source: String
    /// What is wrong.
    public var message: String

    /// Creates an error.
    public init(source: String, message: String) {
        self.source = source
        self.message = message
    }

    public var description: String { "\(self.source): \(self.message)" }
}
