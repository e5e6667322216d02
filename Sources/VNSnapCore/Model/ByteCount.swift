/// How sizes are shown to operators: mebibytes with one decimal ("128.0").
public enum ByteCount {
    /// `bytes` in MiB, rounded to one decimal.
    public static func mebibytes(_ bytes: UInt64) -> String {
        let tenths = (bytes / 1_048_576) * 10 + ((bytes % 1_048_576) * 10 + 524_288) / 1_048_576
        return "\(tenths / 10).\(tenths % 10)"
    }
}
