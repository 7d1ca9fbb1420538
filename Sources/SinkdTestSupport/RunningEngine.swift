import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import SinkdCore
import SinkdDelivery
import SinkdWAL

/// The delivery engine over a real WAL and dead-letter directory in a fresh temporary directory,
/// for the sink families' integration tests (their broker is real; so is everything here).
/// Test support only: no product links it.
public final class RunningEngine: @unchecked Sendable {
    public let directory: String
    public let config: SinkdConfig
    public let wal: WriteAheadLog
    public let deadLetters: DeadLetterStore
    public let service: DeliveryService
    private let group: ServiceGroup
    private let run: Task<Void, Error>

    /// `configure` sets the family's section (and anything else) on a configuration whose WAL
    /// and dead letters live in the temporary directory.
    public init(
        families: [ConfigFamily: any SinkFamily], logLevel: Logger.Level = .critical,
        _ configure: (inout SinkdConfig) -> Void
    ) throws {
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-engine-\(UUID().uuidString.prefix(8))")
            .path
        var config = SinkdConfig()
        config.wal.directory = directory + "/wal"
        config.delivery.deadLetterDirectory = directory + "/dlq"
        config.delivery.shutdownTimeout = .seconds(2)
        configure(&config)
        self.config = config
        var logger = Logger(label: "sinkd.test.engine")
        logger.logLevel = logLevel
        wal = try WriteAheadLog(options: WALOptions(config), logger: logger)
        wal.start()
        deadLetters = try DeadLetterStore(directory: config.delivery.deadLetterDirectory)
        service = DeliveryService(
            wal: wal, config: config, families: families, deadLetters: deadLetters, logger: logger)
        group = ServiceGroup(configuration: .init(services: [.init(service: service)], logger: logger))
        let group = self.group
        run = Task { try await group.run() }
    }

    /// Appends `records` and returns once they are durable (as ingest acknowledges them).
    public func append(_ records: [EventRecord]) async {
        let (_, ticket) = wal.append(records, nowMillis: WallClock.millis())
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            wal.whenDurable(ticket) { _ in c.resume() }
        }
    }

    /// `sink`'s pipeline as `sinkd status` shows it (nil before it started).
    public func snapshot(of sink: String) -> PipelineSnapshot? {
        service.snapshots.first { $0.sink == sink }
    }

    public func state(of sink: String) -> PipelineSnapshot.State? { snapshot(of: sink)?.state }

    /// Waits (up to `timeout`) until `sink`'s pipeline is in `state`; returns whether it got there.
    public func wait(for sink: String, state: PipelineSnapshot.State, timeout: Duration = .seconds(30)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while self.state(of: sink) != state, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return self.state(of: sink) == state
    }

    /// Waits (up to `timeout`) until `sink` counts `count` delivered records; what it counts.
    /// (The broker may hold a record a moment before its confirmation reaches the pipeline.)
    public func waitForDelivered(_ sink: String, _ count: UInt64, timeout: Duration = .seconds(30)) async -> UInt64 {
        let deadline = ContinuousClock.now + timeout
        while snapshot(of: sink)?.delivered ?? 0 < count, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return snapshot(of: sink)?.delivered ?? 0
    }

    /// Stops the engine gracefully and closes the WAL; the directory is removed.
    public func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await run.value
        wal.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Runs blocking work (starting a server, running a helper process, polling with sleeps) on a
/// Dispatch thread, so that it never occupies one of Swift concurrency's few cooperative threads:
/// on 2 cores, two tests blocking there would starve every engine running beside them.
public func offThePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try body() })
        }
    }
}

/// Runs a test's blocking body (sockets read with timeouts, child processes, polling loops) on a
/// thread of its own, inside the test's task (so `#expect` still reports to the test): a blocking
/// test must not hold one of Swift concurrency's cooperative threads (one per core, two here),
/// which the async tests running beside it need.
public final class BlockingTestExecutor: TaskExecutor, @unchecked Sendable {
    public static let shared = BlockingTestExecutor()
    private let threads = NIOLockedValueBox<Set<pthread_t>>([])

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        Thread.detachNewThread {
            let tid = pthread_self()
            self.threads.withLockedValue { _ = $0.insert(tid) }
            job.runSynchronously(on: self.asUnownedTaskExecutor())
            self.threads.withLockedValue { _ = $0.remove(tid) }
        }
    }

    /// True on a thread this executor is running a job on (so a test can check where it runs).
    public static var isCurrentThread: Bool {
        let tid = pthread_self()
        return shared.threads.withLockedValue { $0.contains(tid) }
    }
}

public func blocking<T: Sendable>(_ body: () throws -> T) async throws -> T {
    try await withTaskExecutorPreference(BlockingTestExecutor.shared) { try body() }
}
