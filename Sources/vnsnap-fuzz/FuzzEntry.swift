import Foundation
import VNSnapFuzz

// Built with `-sanitize=fuzzer` and `-D VNSNAP_LIBFUZZER` (tools/fuzz), this is a libFuzzer harness: libFuzzer's
// `main` runs it on the target named by VNSNAP_FUZZ_TARGET. Built plainly, it replays inputs (corpus files,
// crash reproducers) through the same harness and writes the generated seeds.

/// Writes `message` to standard error and exits with `status`.
func quit(_ message: String, status: Int32) -> Never {
    FileHandle.standardError.write(Data(message.utf8))
    exit(status)
}

#if VNSNAP_LIBFUZZER
/// The target under fuzzing, read once from the environment.
let fuzzedTarget: FuzzTarget = {
    guard let name = getenv("VNSNAP_FUZZ_TARGET").map({ String(cString: $0) }), let target = FuzzTarget(rawValue: name)
    else {
        let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
        quit("vnsnap-fuzz: set VNSNAP_FUZZ_TARGET to one of \(names)\n", status: 2)
    }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let bytes = count == 0 ? [] : [UInt8](UnsafeBufferPointer(start: start, count: count))
    if let violation = fuzzedTarget.run(bytes) {
        // A crash is what libFuzzer records (with the input that caused it).
        fatalError("\(fuzzedTarget.rawValue): \(violation)")
    }
    return 0
}

/// libFuzzer's driver, started from our own entry point.
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ body: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// SwiftPM links an executable's entry point as `<module>_main` (so tests can link the module): that symbol, not
/// libFuzzer's `main`, starts the process, so it hands over to libFuzzer's driver.
@_cdecl("vnsnap_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    return runFuzzerDriver(&count, &arguments, fuzzOneInput)
}
#else
/// `vnsnap-fuzz replay TARGET FILE...` and `vnsnap-fuzz seeds TARGET DIR`.
@main
struct FuzzReplay {
    static func main() {
        let arguments = CommandLine.arguments.dropFirst()
        guard arguments.count >= 3, let target = FuzzTarget(rawValue: arguments[arguments.startIndex + 1]) else {
            let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")
            quit("usage: vnsnap-fuzz replay (\(names)) FILE...\n       vnsnap-fuzz seeds TARGET DIR\n", status: 2)
        }
        let rest = Array(arguments.dropFirst(2))
        switch arguments.first {
        case "replay":
            var failed = 0
            for path in rest {
                guard let bytes = FuzzFiles.read(path) else {
                    quit("vnsnap-fuzz: cannot read \(path)\n", status: 1)
                }
                if let violation = target.run(bytes) {
                    print("\(path): \(violation)")
                    failed += 1
                }
            }
            print("\(target.rawValue): \(rest.count - failed) of \(rest.count) inputs held every property")
            exit(failed == 0 ? 0 : 1)
        case "seeds":
            for (index, seed) in target.generatedSeeds.enumerated() {
                guard FuzzFiles.write(seed, to: "\(rest[0])/seed-\(index)") else {
                    quit("vnsnap-fuzz: cannot write into \(rest[0])\n", status: 1)
                }
            }
            print("\(target.rawValue): \(target.generatedSeeds.count) seeds in \(rest[0])")
        default:
            quit("vnsnap-fuzz: unknown command \(arguments.first ?? "")\n", status: 2)
        }
    }
}
#endif
