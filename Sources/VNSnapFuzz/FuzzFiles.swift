import Foundation

/// Reading and writing fuzz inputs (corpora, reproducers, seeds).
public enum FuzzFiles {
    /// A file's bytes, or `nil` if it cannot be read.
    public static func read(_ path: String) -> [UInt8]? {
        FileManager.default.contents(atPath: path).map { Array($0) }
    }

    /// Writes `bytes` to `path`, creating its directory; whether it worked.
    public static func write(_ bytes: [UInt8], to path: String) -> Bool {
        let directory = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return FileManager.default.createFile(atPath: path, contents: Data(bytes))
    }

    /// The regular files directly in `directory`, sorted (empty if there is none).
    public static func inputs(in directory: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.sorted().map { "\(directory)/\($0)" }.filter { path in
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
        }
    }
}
