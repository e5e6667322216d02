import ArgumentParser
import Foundation
import VNSnapCore
import VNSnapCrypto
import VNSnapImage

/// `vnsnap-bench unseal`: an image's raw stream from its chunk files, sealed at rest or not, to standard output
/// (the snapshot bench measures bare zstd and the image writer alone on a real VM's stream).
struct UnsealCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unseal",
        abstract: "Write the raw stream of an image's chunk files (opened with the cluster keyring) to standard output."
    )

    @Option(help: "The cluster keyring file.") var keyring: String
    @Option(help: "The cluster's name.") var cluster: String
    @Option(help: "The snapshot id.") var snapshot: UInt64
    @Option(help: "The VM.") var vm: String
    @Option(help: "memory or channel.") var kind: ImageKind = .memory
    @Argument(help: "The chunk files, in order (chunk-NNNNNN.zst).") var chunks: [String]

    func run() throws {
        let ring = try Keyring.parse(String(contentsOfFile: self.keyring, encoding: .utf8), path: self.keyring)
        let keys = AtRestKeys(keyring: ring, clusterName: self.cluster)
        let cipher = ChunkCipher(
            snapshot: self.snapshot,
            vm: self.vm,
            kind: self.kind,
            sealing: nil,
            opening: keys.opening(snapshot: self.snapshot),
            requireSealed: false
        )
        for (index, path) in self.chunks.enumerated() {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ValidationError("cannot read \(path)")
            }
            let compressed = try cipher.open([UInt8](data), index: index, label: path)
            // The raw size is not stored beside a chunk: zstd's frame header carries it.
            let raw = try Zstd.decompress(compressed, rawSize: Zstd.contentSize(compressed) ?? 0)
            FileHandle.standardOutput.write(Data(raw))
        }
    }
}

extension ImageKind: ExpressibleByArgument {}
