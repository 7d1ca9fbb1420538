import Testing
import SinkdTestSupport

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


