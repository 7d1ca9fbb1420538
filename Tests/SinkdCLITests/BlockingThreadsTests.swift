import Foundation
import Testing
import SinkdTestSupport
import SinkdTestServers

/// The trait the blocking suites carry really moves their bodies off the cooperative pool: without
/// it, CI's two cooperative threads were both held by daemon tests and an async engine test beside
/// them delivered 0 of 500 records.
@Suite(.blockingThreads) struct BlockingThreadsTests {
    @Test func aSynchronousTestRunsOnAThreadOfItsOwn() {
        #expect(BlockingTestExecutor.isCurrentThread)
    }

    @Test func anAsyncTestResumesOnThreadsOfItsOwn() async throws {
        #expect(onBlockingThread())
        try await Task.sleep(for: .milliseconds(1))
        #expect(onBlockingThread())
    }

    /// Its expectations still belong to the test: a failure inside is reported, not lost.
    @Test func anExpectationInsideIsRecorded() {
        withKnownIssue { #expect(Bool(false)) }
    }
}

@Suite struct CooperativePoolTests {
    /// The counterpart: without the trait a test runs on the cooperative pool (so the check above
    /// can fail).
    @Test func withoutTheTraitATestRunsOnTheCooperativePool() {
        #expect(!BlockingTestExecutor.isCurrentThread)
    }
}

/// From a synchronous context, as the blocking code under test would ask.
private func onBlockingThread() -> Bool { BlockingTestExecutor.isCurrentThread }

/// Every suite in a test file that blocks (child processes, Python helpers, sleeps on a thread)
/// carries the trait: a blocking suite without it holds one of the two cooperative threads the
/// engines under test in the other suites need (CI saw a conductor sink deliver nothing in 40 s
/// beside suites that ran Python on the pool).
@Suite struct BlockingSuitesCarryTheTraitTests {
    static let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    static let blockingCalls = ["Process()", "waitUntilExit", "usleep(", "Thread.sleep", "Python.run("]

    @Test func everySuiteInAFileThatBlocksCarriesTheTrait() throws {
        let files = try #require(FileManager.default.enumerator(atPath: Self.tests.path)).compactMap { $0 as? String }
            .filter { $0.hasSuffix(".swift") }
        var checked = 0
        for file in files where !file.hasSuffix("BlockingThreadsTests.swift") {  // this file names the calls
            let text = try String(contentsOf: Self.tests.appendingPathComponent(file), encoding: .utf8)
            guard Self.blockingCalls.contains(where: text.contains) else { continue }
            for line in text.split(separator: "\n") where line.trimmingCharacters(in: .whitespaces).hasPrefix("@Suite")
            {
                checked += 1
                #expect(
                    line.contains(".blockingThreads"),
                    "\(file): \(line.trimmingCharacters(in: .whitespaces)) blocks but runs on the cooperative pool: add .blockingThreads"
                )
            }
        }
        #expect(checked > 20, "the scan found the blocking suites (\(checked))")
    }
}
