import Testing
import VNSnapCore

/// Sizes as operators read them: MiB with one decimal, rounded half up.
@Suite struct ByteCountTests {
    @Test func test_mebibytes_oneDecimalRounded() {
        #expect(ByteCount.mebibytes(0) == "0.0")
        #expect(ByteCount.mebibytes(256 << 20) == "256.0")
        #expect(ByteCount.mebibytes((1 << 20) + 52_429) == "1.1", "1.05 MiB rounds up")
        #expect(ByteCount.mebibytes((1 << 20) + 52_428) == "1.0")
        #expect(ByteCount.mebibytes((2 << 20) - 1) == "2.0")
        #expect(ByteCount.mebibytes(UInt64.max).hasPrefix("17592186044416."))
    }
}
