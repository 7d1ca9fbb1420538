import Foundation
import Testing
import SinkdFuzzTargets

/// Every input in the committed corpora (Fuzz/corpus/TARGET: the seeds, and every crash the
/// fuzzer once found, kept as a regression) runs through its target without a crash.
@Suite struct CorpusReplayTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Fuzz/corpus").standardized.path

    @Test(arguments: FuzzTarget.allCases)
    func corpusRunsClean(_ target: FuzzTarget) throws {
        let directory = Self.corpus + "/" + target.rawValue
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { !$0.hasPrefix(".") }.sorted()
        #expect(files.count >= 3, "\(directory) holds the target's seed corpus")
        for file in files {
            let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/" + file))
            data.withUnsafeBytes { target.run($0) }
        }
    }
}
