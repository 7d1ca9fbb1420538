import SinkdFuzzTargets

#if canImport(Glibc)
import Glibc
#endif

// libFuzzer's entry points. Built by scripts/fuzz with -sanitize=fuzzer,address -parse-as-library
// -DFUZZING; the target is chosen by SINKD_FUZZ_TARGET.
nonisolated(unsafe) private var selected: FuzzTarget?

private func printError(_ text: String) {
    let bytes = Array(text.utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>
) -> Int32 {
    guard let name = getenv("SINKD_FUZZ_TARGET").map({ String(cString: $0) }), let target = FuzzTarget(rawValue: name)
    else {
        printError(
            "sinkd-fuzz: set SINKD_FUZZ_TARGET to one of \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))\n"
        )
        exit(2)
    }
    selected = target
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ start: UnsafeRawPointer?, _ count: Int) -> Int32 {
    selected?.run(UnsafeRawBufferPointer(start: start, count: count))
    return 0
}

#if FUZZING
import CFuzzDriver

/// The executable's entry (SwiftPM names it sinkd_fuzz_main): libFuzzer's driver.
@_cdecl("sinkd_fuzz_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    var argc = argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in testOneInput(data, size) }
}
#else
/// Without libFuzzer (a normal build): `sinkd-fuzz TARGET FILE...` runs each file through the
/// target once, e.g. to reproduce a crash the fuzzer saved under Fuzz/crashes/.
@main
enum Replay {
    static func main() {
        let arguments = CommandLine.arguments.dropFirst()
        guard let name = arguments.first, let target = FuzzTarget(rawValue: name) else {
            printError(
                "usage: sinkd-fuzz TARGET FILE...   (targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")))\n"
            )
            exit(2)
        }
        for path in arguments.dropFirst() {
            guard let file = fopen(path, "rb") else {
                printError("sinkd-fuzz: cannot open \(path)\n")
                exit(1)
            }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = fread(&buffer, 1, buffer.count, file)
                if n <= 0 { break }
                bytes += buffer[0..<n]
            }
            fclose(file)
            bytes.withUnsafeBytes { target.run($0) }
            print("\(path): ok")
        }
    }
}
#endif
