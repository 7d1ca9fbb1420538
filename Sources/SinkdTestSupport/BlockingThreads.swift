import Foundation
import NIOConcurrencyHelpers
import Testing

/// A suite (or test) trait: every test under it runs on threads of its own (`BlockingTestExecutor`),
/// never on one of Swift concurrency's cooperative threads. For tests that block: child processes,
/// sockets read with timeouts, servers started and polled, fsync-heavy file work. Swift Testing runs
/// tests in parallel on the cooperative pool (one thread per core: two on CI), so two such tests
/// would otherwise stop every async test beside them (CI saw a delivery engine deliver 0 of 500
/// records in 20 s because its pipelines never got a thread).
///
/// Off the pool nothing bounds how many run at once any more, and every suite starting its daemons
/// and brokers together on two cores made timing-bound tests fail (a RabbitMQ test took 60 s); so at
/// most `BlockingThreads.width` such tests run at a time, as many as the cooperative pool let run
/// before, and the pool stays free for the async tests.
///
/// Child tasks of the test (task groups, `async let`) inherit the preference; unstructured tasks
/// (`Task {}`, which the engine's services use) do not, so the code under test still runs where it
/// does in sinkd.
public struct BlockingThreads: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    /// How many blocking tests run at once.
    public static let width = max(2, ProcessInfo.processInfo.activeProcessorCount)
    static let gate = AsyncGate(width: width)

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        // The suite-level call has no test case; each test's own call does the work.
        guard testCase != nil else { return try await function() }
        await Self.gate.enter()
        defer { Self.gate.leave() }
        try await withTaskExecutorPreference(BlockingTestExecutor.shared) { try await function() }
    }
}

extension Trait where Self == BlockingThreads {
    /// Run the tests on threads of their own: see `BlockingThreads`.
    public static var blockingThreads: Self { BlockingThreads() }
}

/// A counting gate for async code: `enter` waits (suspending, never blocking a thread) until one of
/// `width` places is free; `leave` frees it for the longest waiter.
final class AsyncGate: Sendable {
    private struct State {
        var free: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state: NIOLockedValueBox<State>

    init(width: Int) { state = NIOLockedValueBox(State(free: width)) }

    func enter() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let admitted = state.withLockedValue { state in
                if state.free > 0 {
                    state.free -= 1
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if admitted { continuation.resume() }
        }
    }

    func leave() {
        let next = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty {
                state.free += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}
