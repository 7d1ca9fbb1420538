import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import SinkdCore
import SinkdWAL

/// Starts one pipeline per sink with records in the WAL, on demand, at most `delivery.max_sinks`
/// at once (the others wait, never dropped); reaps idle ones; stops them all on graceful shutdown.
public final class DeliveryService: Service, Sendable {
    let wal: WriteAheadLog
    let deadLetters: DeadLetterStore
    let logger: Logger
    private let pipelines = NIOLockedValueBox<[String: SinkPipeline]>([:])
    private let signal = AsyncSignal()
    /// `delivery.max_sinks` is capped by this (the descriptor budget, README Resource bounds).
    let sinkLimit: Int
    /// Sinks wait for a pipeline slot: idle pipelines leave at once to make room.
    private let sinksWaiting = NIOLockedValueBox(false)
    /// Record bytes held by all pipelines (`delivery.max_held_bytes`).
    public let heldBudget: HeldBytesBudget
    /// Tests only: runs at start between the two reads of the WAL (the new sinks drained, the
    /// sinks in the log listed), where an append once went unseen by both and never got a
    /// pipeline.
    let startupProbe = NIOLockedValueBox<(@Sendable () async -> Void)?>(nil)
    /// Tests only: runs in each check of the new-sink watch between its two reads of the WAL
    /// (the durable seq it waits after, the new sinks).
    let watchProbe = NIOLockedValueBox<(@Sendable () -> Void)?>(nil)

    /// The configuration and families pipelines start with; replaced by `apply` on a reload.
    public struct Generation: Sendable {
        public var number: Int
        public var config: SinkdConfig
        public var families: [ConfigFamily: any SinkFamily]
    }

    private struct Reloadable {
        var generation: Generation
        /// Families replaced or removed by a reload, shut down once their pipelines have left.
        var retired: [(family: any SinkFamily, sinks: Set<String>)] = []
        var reloadPending = false
    }

    private let state: NIOLockedValueBox<Reloadable>

    public init(wal: WriteAheadLog, config: SinkdConfig, families: [ConfigFamily: any SinkFamily], deadLetters: DeadLetterStore, logger: Logger, sinkLimit: Int = .max) {
        self.wal = wal
        self.sinkLimit = sinkLimit
        self.heldBudget = HeldBytesBudget(limit: config.delivery.maxHeldBytes)
        self.state = NIOLockedValueBox(Reloadable(generation: Generation(number: 1, config: config, families: families)))
        self.deadLetters = deadLetters
        self.logger = logger
    }

    public var generation: Generation { state.withLockedValue { $0.generation } }
    public var config: SinkdConfig { generation.config }
    public var families: [ConfigFamily: any SinkFamily] { generation.families }

    /// Switches to a new configuration (a reload). `families` holds the new configuration's
    /// families; pass the running instance for a family whose section did not change, so its
    /// connections stay. Pipelines whose family or options changed finish their in-flight batches
    /// and stop; their records stay in the WAL and a new pipeline (or none, for a removed family)
    /// takes them over. Returns the new generation number.
    @discardableResult
    public func apply(config: SinkdConfig, families: [ConfigFamily: any SinkFamily]) -> Int {
        let (number, stopping) = state.withLockedValue { s -> (Int, [SinkPipeline]) in
            let old = s.generation
            s.generation = Generation(number: old.number + 1, config: config, families: families)
            s.reloadPending = true
            let live = pipelines.withLockedValue { Array($0.values) }
            var stopping: [SinkPipeline] = []
            for pipeline in live {
                guard let family = pipeline.address.prefix.configFamily else { continue }
                let sameFamily = families[family].map { $0 === pipeline.family } ?? false
                let sameOptions = config.sinks.options(for: family) == pipeline.options
                    && config.delivery.shutdownTimeout == old.config.delivery.shutdownTimeout
                if !sameFamily || !sameOptions { stopping.append(pipeline) }
            }
            for (name, family) in old.families where families[name].map({ $0 !== family }) ?? true {
                let users = Set(live.filter { $0.family === family }.map(\.address.identity))
                s.retired.append((family, users))
            }
            // A family retired by an earlier reload and handed back now is in use again.
            s.retired.removeAll { retired in families.values.contains { $0 === retired.family } }
            return (s.generation.number, stopping)
        }
        heldBudget.setLimit(config.delivery.maxHeldBytes)
        for pipeline in stopping { pipeline.stop() }
        signal.fire()
        retireIdleFamilies()
        return number
    }

    /// Shuts down retired families no pipeline uses any more.
    private func retireIdleFamilies(exited sink: String? = nil) {
        let done: [any SinkFamily] = state.withLockedValue { s in
            if let sink { for i in s.retired.indices { s.retired[i].sinks.remove(sink) } }
            let idle = s.retired.filter { $0.sinks.isEmpty }.map(\.family)
            s.retired.removeAll { $0.sinks.isEmpty }
            return idle
        }
        for family in done { Task { await family.shutdown() } }
    }

    /// Every family still owned: the current ones and retired ones not yet shut down (for the
    /// daemon's final shutdown).
    public var allFamilies: [any SinkFamily] {
        state.withLockedValue { s in Array(s.generation.families.values) + s.retired.map(\.family) }
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
                var waitingSet = Set<String>()
                var parked = Set<String>()
                func start(_ sink: String) {
                    guard !stopped.withLockedValue({ $0 }), pipelines.withLockedValue({ $0[sink] == nil }) else { return }
                    guard let address = try? SinkAddress.parse(identity: sink) else {
                        if parked.insert(sink).inserted {
                            logger.error("records in the WAL name a sink sinkd cannot parse; they stay in the WAL", metadata: ["sink": "\(sink)"])
                        }
                        return
                    }
                    let current = generation
                    guard let familyName = address.prefix.configFamily, let family = current.families[familyName], let options = current.config.sinks.options(for: familyName) else {
                        if parked.insert(sink).inserted {
                            logger.warning("records wait in the WAL: their sink family is not configured or has no delivery yet", metadata: ["sink": "\(sink)"])
                        }
                        return
                    }
                    guard pipelines.withLockedValue({ $0.count }) < min(current.config.delivery.maxSinks, sinkLimit) else {
                        if waitingSet.insert(sink).inserted {
                            waitingSinks.append(sink)
                            if !sinksWaiting.withLockedValue({ $0 }) {
                                // Idle pipelines give their slot up now rather than at idle_timeout.
                                sinksWaiting.withLockedValue { $0 = true }
                                for pipeline in pipelines.withLockedValue({ Array($0.values) }) { pipeline.nudge() }
                            }
                        }
                        return
                    }
                    let sinksWaiting = self.sinksWaiting
                    let pipeline = SinkPipeline(address: address, options: options, family: family, wal: wal, deadLetters: deadLetters,
                                                shutdownTimeout: current.config.delivery.shutdownTimeout, logger: logger,
                                                othersWaiting: { sinksWaiting.withLockedValue { $0 } },
                                                heldBytesPerSink: current.config.delivery.maxHeldBytesPerSink, heldBudget: heldBudget)
                    pipelines.withLockedValue { $0[sink] = pipeline }
                    group.addTask {
                        await pipeline.run()
                        return .exited(sink)
                    }
                }
                func awaitNewSinks() {
                    let signal = self.signal
                    group.addTask {
                        await withTaskCancellationHandler {
                            await signal.wait()
                        } onCancel: {
                            signal.fire()
                        }
                        return stopped.withLockedValue { $0 } || Task.isCancelled ? .shutdown : .newSinks
                    }
                }
                // Sinks with records from before this start. New sinks are drained first, then the
                // log listed: a round completing in between is in the list (its segment summary is
                // updated before it counts as new), one completing later wakes the watch below.
                // The other order lost it: listed too early, then drained away unseen.
                _ = wal.drainNewSinks()
                if let probe = startupProbe.withLockedValue({ $0 }) { await probe() }
                for sink in wal.sinksInLog().keys.sorted() { start(sink) }
                watchNewSinks()
                awaitNewSinks()
                for await event in group {
                    // Cancelled (the service group is going down hard): stop like a shutdown,
                    // never restart a pipeline that only left because of it.
                    if Task.isCancelled, !stopped.withLockedValue({ $0 }) {
                        stopped.withLockedValue { $0 = true }
                        for pipeline in self.pipelines.withLockedValue({ Array($0.values) }) { pipeline.stop() }
                    }
                    if stopped.withLockedValue({ $0 }) {
                        if case .exited(let sink) = event {
                            pipelines.withLockedValue { $0[sink] = nil }
                            retireIdleFamilies(exited: sink)
                        }
                        continue
                    }
                    switch event {
                    case .newSinks:
                        if state.withLockedValue({ s in defer { s.reloadPending = false }; return s.reloadPending }) {
                            // A reload: sinks parked for a missing family may have one now.
                            parked.removeAll()
                            for sink in wal.sinksInLog().keys.sorted() where pipelines.withLockedValue({ $0[sink] == nil }) {
                                start(sink)
                            }
                        }
                        for sink in wal.drainNewSinks().sorted() where pipelines.withLockedValue({ $0[sink] == nil }) {
                            start(sink)
                        }
                        watchNewSinks()
                        awaitNewSinks()
                    case .exited(let sink):
                        let exited = pipelines.withLockedValue { $0.removeValue(forKey: sink) }
                        logger.debug("pipeline stopped", metadata: ["sink": "\(sink)"])
                        retireIdleFamilies(exited: sink)
                        // Records handed out but not finished (a pipeline stopped by a reload), or
                        // a record that arrived while it was leaving: a new pipeline takes over.
                        let progress = wal.progress(of: sink)
                        if !progress.outstanding.isEmpty || wal.hasRecords(sink: sink, after: progress.readUpTo) {
                            start(sink)
                        } else {
                            // Nothing left: no state or series is kept for a sink that may never
                            // come back (15,000 one-off sinks must not mean 15,000 series).
                            exited?.retireMetrics()
                            parked.remove(sink)
                        }
                        while !waitingSinks.isEmpty, pipelines.withLockedValue({ $0.count }) < min(generation.config.delivery.maxSinks, sinkLimit) {
                            let next = waitingSinks.removeFirst()
                            waitingSet.remove(next)
                            start(next)
                        }
                        if waitingSinks.isEmpty { sinksWaiting.withLockedValue { $0 = false } }
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
        let probe = watchProbe.withLockedValue { $0 }
        @Sendable func check() {
            guard !wal.isStopping else { return }
            // The durable seq first, then the new sinks: a round completing in between is among
            // them, or (later) past `seen`, which calls back at once. The other order waited
            // after a round it had not seen.
            let seen = wal.currentStats.durableSeq
            probe?()
            let fresh = wal.peekNewSinks().contains { sink in pipelines.withLockedValue { $0[sink] == nil } }
            if fresh {
                signal.fire()
            } else {
                wal.whenNewData(after: seen) { check() }
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
