import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import SinkdCore
import SinkdWAL

/// Starts one pipeline per sink with records in the WAL, on demand, at most `delivery.max_sinks`
/// at once (the others wait, never dropped); reaps idle ones; stops them all on graceful shutdown.
public final class DeliveryService: Service, Sendable {
    let wal: WriteAheadLog
    let config: SinkdConfig
    public let families: [ConfigFamily: any SinkFamily]
    let deadLetters: DeadLetterStore
    let logger: Logger
    private let pipelines = NIOLockedValueBox<[String: SinkPipeline]>([:])
    private let signal = AsyncSignal()

    public init(wal: WriteAheadLog, config: SinkdConfig, families: [ConfigFamily: any SinkFamily], deadLetters: DeadLetterStore, logger: Logger) {
        self.wal = wal
        self.config = config
        self.families = families
        self.deadLetters = deadLetters
        self.logger = logger
    }

    /// The live pipelines' counters and states.
    public var snapshots: [PipelineSnapshot] {
        pipelines.withLockedValue { $0.values.map(\.snapshot) }.sorted { $0.sink < $1.sink }
    }

    enum Event: Sendable {
        case newSinks
        case exited(String)
        case shutdown
    }

    public func run() async throws {
        let stopped = NIOLockedValueBox(false)
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Event.self) { group in
                var waitingSinks: [String] = []
                var parked = Set<String>()
                func start(_ sink: String) {
                    guard !stopped.withLockedValue({ $0 }), pipelines.withLockedValue({ $0[sink] == nil }) else { return }
                    guard let address = try? SinkAddress.parse(identity: sink) else {
                        if parked.insert(sink).inserted {
                            logger.error("records in the WAL name a sink sinkd cannot parse; they stay in the WAL", metadata: ["sink": "\(sink)"])
                        }
                        return
                    }
                    guard let familyName = address.prefix.configFamily, let family = families[familyName], let options = config.sinks.options(for: familyName) else {
                        if parked.insert(sink).inserted {
                            logger.warning("records wait in the WAL: their sink family is not configured or has no delivery yet", metadata: ["sink": "\(sink)"])
                        }
                        return
                    }
                    guard pipelines.withLockedValue({ $0.count }) < config.delivery.maxSinks else {
                        if !waitingSinks.contains(sink) { waitingSinks.append(sink) }
                        return
                    }
                    let pipeline = SinkPipeline(address: address, options: options, family: family, wal: wal, deadLetters: deadLetters,
                                                shutdownTimeout: config.delivery.shutdownTimeout, logger: logger)
                    pipelines.withLockedValue { $0[sink] = pipeline }
                    group.addTask {
                        await pipeline.run()
                        return .exited(sink)
                    }
                }
                func awaitNewSinks() {
                    let signal = self.signal
                    group.addTask {
                        await signal.wait()
                        return stopped.withLockedValue { $0 } ? .shutdown : .newSinks
                    }
                }
                // Sinks with records from before this start.
                for sink in wal.sinksInLog().keys.sorted() { start(sink) }
                _ = wal.drainNewSinks()
                watchNewSinks()
                awaitNewSinks()
                for await event in group {
                    if stopped.withLockedValue({ $0 }) {
                        if case .exited(let sink) = event { pipelines.withLockedValue { $0[sink] = nil } }
                        continue
                    }
                    switch event {
                    case .newSinks:
                        for sink in wal.drainNewSinks().sorted() where pipelines.withLockedValue({ $0[sink] == nil }) {
                            start(sink)
                        }
                        watchNewSinks()
                        awaitNewSinks()
                    case .exited(let sink):
                        pipelines.withLockedValue { $0[sink] = nil }
                        logger.debug("pipeline stopped", metadata: ["sink": "\(sink)"])
                        // A record may have arrived while it was leaving.
                        if wal.hasRecords(sink: sink, after: wal.progress(of: sink).readUpTo) { start(sink) }
                        while !waitingSinks.isEmpty, pipelines.withLockedValue({ $0.count }) < config.delivery.maxSinks {
                            start(waitingSinks.removeFirst())
                        }
                    case .shutdown:
                        continue
                    }
                }
            }
        } onGracefulShutdown: {
            stopped.withLockedValue { $0 = true }
            for pipeline in self.pipelines.withLockedValue({ Array($0.values) }) { pipeline.stop() }
            self.signal.fire()
        }
    }

    /// Fires `signal` once the WAL has records for a sink without a pipeline (checked on every
    /// new durable batch).
    private func watchNewSinks() {
        let signal = self.signal
        let pipelines = self.pipelines
        let wal = self.wal
        @Sendable func check() {
            guard !wal.isStopping else { return }
            let fresh = wal.peekNewSinks().contains { sink in pipelines.withLockedValue { $0[sink] == nil } }
            if fresh {
                signal.fire()
            } else {
                wal.whenNewData(after: wal.currentStats.durableSeq) { check() }
            }
        }
        check()
    }
}

/// A one-shot, resettable wake-up between a callback and an async waiter.
final class AsyncSignal: Sendable {
    private let state = NIOLockedValueBox<(fired: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    func fire() {
        let waiter: CheckedContinuation<Void, Never>? = state.withLockedValue { s in
            if let w = s.waiter {
                s.waiter = nil
                return w
            }
            s.fired = true
            return nil
        }
        waiter?.resume()
    }

    func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now: Bool = state.withLockedValue { s in
                if s.fired {
                    s.fired = false
                    return true
                }
                s.waiter = c
                return false
            }
            if now { c.resume() }
        }
    }
}
