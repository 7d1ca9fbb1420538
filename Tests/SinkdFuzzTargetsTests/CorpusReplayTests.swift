import Foundation
import Testing
import SinkdFuzzTargets
import SinkdCore

/// Every input in the committed corpora (Fuzz/corpus/TARGET: the seeds, and every crash the
/// fuzzer once found, kept as a regression) runs through its target without a crash.
@Suite struct CorpusReplayTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
        "../../Fuzz/corpus"
    ).standardized.path

    @Test(arguments: FuzzTarget.allCases)
    func corpusRunsClean(_ target: FuzzTarget) throws {
        let directory = Self.corpus + "/" + target.rawValue
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { !$0.hasPrefix(".") }
            .sorted()
        #expect(files.count >= 3, "\(directory) holds the target's seed corpus")
        for file in files {
            let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/" + file))
            data.withUnsafeBytes { target.run($0) }
        }
    }
}

/// Issue 18, item 9: every numeric key with every kind of absurd value either fails to load with
/// a positioned error or loads into something the daemon can use without trapping (the same
/// checks as the `config-numbers` fuzz target, over a fixed table).
@Suite struct ConfigNumbersTableTests {
    static let values = [
        "8000000000000000000", "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-1", "0", "1",
        "1e308", "NaN", "inf", "-inf", "0x7fffffffffffffff", "3000000h", "999999999999h", "9223372036854775807ms",
        "8784h1ms",
        "1PiB", "1024TiB", "1025TiB", "18446744073709551616KiB", "-0s", "1.5", "4KiB", "64GiB", "1ns", "2.0", "1e-300",
        "100000000",
    ]

    @Test func everyNumericKeyWithEveryAbsurdValue() throws {
        var loaded = 0
        for key in ConfigNumbers.keys {
            for value in Self.values {
                ConfigNumbers.check(key: key, value: value)
                do {
                    let config = try ConfigLoader.parse(
                        yaml: ConfigNumbers.yaml(key: key, value: value), file: "t.yaml", environment: [:],
                        workingDirectory: "/")
                    ConfigNumbers.use(config)
                    loaded += 1
                } catch {
                    #expect(
                        error.errors.allSatisfy { $0.description.hasPrefix("t.yaml:") }, "\(key): \(value): \(error)")
                }
            }
        }
        #expect(loaded > 0, "some values are in range and were used")
    }
}
