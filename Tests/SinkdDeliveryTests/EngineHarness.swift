import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import SinkdCore
import SinkdTestSupport
@testable import SinkdDelivery
@testable import SinkdWAL

/// A sink family for fault injection (the one mock here: it stands in for a broker so that
/// failures can be scripted). It poses as the `http` family: sinks `http:NAME`.
final class ScriptedFamily: SinkFamily, @unchecked Sendable {
    let name = ConfigFamily.http
    /// Decides each batch's fate: outcomes, a connection error, or a delay first.
    enum Step: Sendable {
        case outcomes(@Sendable (SequencedRecord) -> DeliveryOutcome)
        case connectionError(String)
        case hang
    }

    private let lock = NIOLock()
    private var scripts: [String: [Step]] = [:]
    private var delivered: [String: [SequencedRecord]] = [:]
    private var attempts: [String: Int] = [:]
    var batchLimit = 50
    var delay: Duration = .zero

    /// Steps for the next batches of `sink`; after the script, every record is delivered.
    func script(_ sink: String, _ steps: [Step]) { lock.withLock { scripts[sink] = steps } }
    func deliveredRecords(_ sink: String) -> [SequencedRecord] { lock.withLock { delivered[sink] ?? [] } }
    func batches(_ sink: String) -> Int { lock.withLock { attempts[sink] ?? 0 } }

    func limits(for address: SinkAddress, options: PipelineOptions) -> SinkLimits {
        SinkLimits(maxBatchCount: min(batchLimit, options.batchSize), maxBatchBytes: 1 << 20, maxMessageBytes: 4096)
    }

    func makeClient(for address: SinkAddress, options: PipelineOptions) throws(SinkConnectionError) -> any SinkClient {
        Client(family: self, sink: address.identity)
    }

    private var shutdownCount = 0
    var shutdowns: Int { lock.withLock { shutdownCount } }
    func shutdown() async { lock.withLock { shutdownCount += 1 } }

    func nextStep(_ sink: String) -> Step? {
        lock.withLock {
            attempts[sink, default: 0] += 1
            guard var steps = scripts[sink], !steps.isEmpty else { return nil }
            let step = steps.removeFirst()
            scripts[sink] = steps
            return step
        }
    }

    func record(_ sink: String, _ records: [SequencedRecord]) {
        lock.withLock { delivered[sink, default: []] += records }
    }

    struct Client: SinkClient {
        let family: ScriptedFamily
        let sink: String

        func send(_ batch: [SequencedRecord]) async throws(SinkConnectionError) -> [DeliveryOutcome] {
            if family.delay > .zero { try? await Task.sleep(for: family.delay) }
            switch family.nextStep(sink) {
            case nil:
                family.record(sink, batch)
                return batch.map { _ in .delivered }
            case .outcomes(let decide)?:
                let outcomes = batch.map(decide)
                family.record(sink, zip(batch, outcomes).filter { $0.1 == .delivered }.map(\.0))
                return outcomes
            case .connectionError(let message)?:
                throw SinkConnectionError(message)
            case .hang?:
                try? await Task.sleep(for: .seconds(3600))
                throw SinkConnectionError("cancelled")
            }
        }

        func close() async {}
    }
}

/// The delivery engine over a real WAL and dead-letter directory in a temporary directory.
final class EngineHarness: @unchecked Sendable {
    let directory: String
    var config: SinkdConfig
    var wal: WriteAheadLog!
    var deadLetters: DeadLetterStore!
    var service: DeliveryService!
    var group: ServiceGroup!
    var runTask: Task<Void, Error>?
    let family: ScriptedFamily
    let logger: Logger

    init(
        family: ScriptedFamily = ScriptedFamily(), logger: Logger = EngineHarness.logger,
        _ configure: (inout SinkdConfig) -> Void = { _ in }
    ) throws {
        self.family = family
        self.logger = logger
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-engine-\(UUID().uuidString.prefix(8))")
            .path
        var config = SinkdConfig()
        config.wal.directory = directory + "/wal"
        config.wal.segmentSize = 64 << 10
        config.delivery.deadLetterDirectory = directory + "/dlq"
        config.delivery.shutdownTimeout = .seconds(2)
        var http = HTTPSinkConfig()
        http.options.retry.initialBackoff = .milliseconds(5)
        http.options.retry.maxBackoff = .milliseconds(20)
        http.options.batchSize = 50
        http.options.maxInFlight = 4
        config.sinks.http = http
        configure(&config)
        self.config = config
        try start()
    }

    static let logger: Logger = {
        var l = Logger(label: "sinkd.test.engine")
        l.logLevel = .critical
        return l
    }()

    func start() throws {
        var options = WALOptions(config)
        options.checkpointInterval = .milliseconds(20)
        wal = try WriteAheadLog(options: options, logger: Self.logger)
        wal.start()
        deadLetters = try DeadLetterStore(directory: config.delivery.deadLetterDirectory)
        service = DeliveryService(
            wal: wal, config: config, families: [.http: family], deadLetters: deadLetters, logger: logger)
        group = ServiceGroup(configuration: .init(services: [.init(service: service)], logger: Self.logger))
        let group = self.group!
        runTask = Task { try await group.run() }
    }

    /// Graceful stop: pipelines finish in-flight batches (up to shutdown_timeout), progress saved.
    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await runTask?.value
        wal.shutdown()
    }

    func restart() async throws {
        await stop()
        try start()
    }

    func finish() async {
        await stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    @discardableResult
    func append(_ sink: String, _ ids: [String], payloadBytes: Int = 16) -> [UInt64] {
        let records = ids.map {
            EventRecord(
                id: $0, sink: sink, payload: Array(("\"" + String(repeating: "p", count: payloadBytes) + "\"").utf8))
        }
        let (outcomes, ticket) = wal.append(records, nowMillis: WallClock.millis())
        let done = DispatchSemaphore(value: 0)
        wal.whenDurable(ticket) { _ in done.signal() }
        done.wait()
        return outcomes.compactMap { if case .accepted(let seq) = $0 { seq } else { nil } }
    }

    /// Waits (polling, bounded) until `condition` holds; false if it never did.
    func eventually(timeout: Duration = .seconds(20), _ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return condition()
    }
}

/// A value shared between test tasks.
final class LockedBox<Value: Sendable>: Sendable {
    private let box: NIOLockedValueBox<Value>
    init(_ value: Value) { box = NIOLockedValueBox(value) }
    func get() -> Value { box.withLockedValue { $0 } }
    func set(_ value: Value) { box.withLockedValue { $0 = value } }
}
