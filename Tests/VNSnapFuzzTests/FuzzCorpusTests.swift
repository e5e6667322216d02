import Testing
import VNSnapFuzz

/// The checked-in corpora (`Fixtures/fuzz/TARGET/`) and the inputs fuzzing found (`Fixtures/fuzz/regressions/TARGET/`)
/// replayed through the harnesses on every test run.
@Suite struct FuzzCorpusTests {
    static let fixtures = #filePath.split(separator: "/").dropLast(3).joined(separator: "/") + "/Fixtures/fuzz"

    @Test(arguments: FuzzTarget.allCases)
    func test_replay_everyCorpusInput_shouldHoldEveryProperty(_ target: FuzzTarget) {
        let inputs = FuzzFiles.inputs(in: "/\(Self.fixtures)/\(target.rawValue)")
        #expect(!inputs.isEmpty, "no corpus for \(target.rawValue)")
        for path in inputs + FuzzFiles.inputs(in: "/\(Self.fixtures)/regressions/\(target.rawValue)") {
            let bytes = FuzzFiles.read(path) ?? []
            let violation = target.run(bytes)
            #expect(violation == nil, "\(path): \(violation?.description ?? "")")
        }
    }

    @Test(arguments: FuzzTarget.allCases.filter { !$0.generatedSeeds.isEmpty })
    func test_generatedSeeds_ofEachBinaryTarget_shouldDecode(_ target: FuzzTarget) {
        // A seed the decoder refuses would only start the fuzzer from nothing.
        for seed in target.generatedSeeds {
            #expect(target.decodes(seed), "\(target.rawValue): a generated seed of \(seed.count) bytes is refused")
            #expect(target.run(seed) == nil)
        }
    }

    @Test func test_roundTrip_aLossyEncoding_shouldReportAViolation() {
        // The check the codec targets rely on fails when an encoding loses something.
        let violation = FuzzTarget.checkRoundTrip(
            [1, 2, 3],
            decode: { (bytes: [UInt8]) throws(FuzzViolation) in bytes },
            encode: { Array($0.dropLast()) }
        )
        #expect(violation != nil)
    }

    @Test func test_tunnel_aSealedDatagramWithAByteFlipped_shouldNotOpenNorViolate() {
        var datagram = FuzzTarget.tunnel.generatedSeeds[0]
        #expect(FuzzTarget.tunnel.decodes(datagram))
        datagram[datagram.count - 1] ^= 1
        #expect(!FuzzTarget.tunnel.decodes(datagram))
        #expect(FuzzTarget.tunnel.run(datagram) == nil)
    }
}
