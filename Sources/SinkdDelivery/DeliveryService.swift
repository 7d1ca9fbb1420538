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
    /// `delivery.max_sinks` is capped by this (the descriptor budget, docs/SERVICE.md, Resource bounds).
    let sinkLimit: Int
    /// Sinks wait for a pipeline slot: idle pipelines leave at once to make room.
    private let sinksWaiting = NIOLockedValueBox(false)
    /// Record bytes held by all pipelines (`delivery.max_held_bytes`).
    public let heldBudget: HeldBytesBudget

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

    public init(
        wal: WriteAheadLog, config: SinkdConfig, families: [ConfigFamily: any SinkFamily], deadLetters: DeadLetterStore,
        logger: Logger, sinkLimit: Int = .max
    ) {
        self.wal = wal
        self.sinkLimit = sinkLimit
        self.heldBudget = HeldBytesBudget(limit: config.delivery.maxHeldBytes)
        self.state = NIOLockedValueBox(
            Reloadable(generation: Generation(number: 1, config: config, families: families)))
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
                let sameOptions =
                    config.sinks.options(for: family) == pipeline.options
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
                // The decisions (DispatcherStateMachine); this loop executes them.
                var machine = DispatcherStateMachine()
                var limit: Int { min(generation.config.delivery.maxSinks, sinkLimit) }
                func check(_ sink: String) -> DispatcherStateMachine.SinkCheck {
                    guard let address = try? SinkAddress.parse(identity: sink) else { return .unparseable }
                    let current = generation
                    guard let family = address.prefix.configFamily, current.families[family] != nil,
                        current.config.sinks.options(for: family) != nil
                    else {
                        return .unconfigured
                    }
                    return .ready
                }
                func execute(_ actions: [DispatcherStateMachine.Action]) {
                    for action in actions {
                        switch action {
                        case .start(let sink):
                            startPipeline(sink)
                        case .parkedUnparseable(let sink):
                            logger.error(
                                "records in the WAL name a sink sinkd cannot parse; they stay in the WAL",
                                metadata: ["sink": "\(sink)"])
                        case .parkedUnconfigured(let sink):
                            logger.warning(
                                "records wait in the WAL: their sink family is not configured or has no delivery yet",
                                metadata: ["sink": "\(sink)"])
                        case .nudgeIdlePipelines:
                            // Idle pipelines give their slot up now rather than at idle_timeout.
                            sinksWaiting.withLockedValue { $0 = true }
                            for pipeline in pipelines.withLockedValue({ Array($0.values) }) { pipeline.nudge() }
                        case .retireMetrics(let sink):
                            retiring.removeValue(forKey: sink)?.retireMetrics()
                        case .stopAll:
                            stopped.withLockedValue { $0 = true }
                            for pipeline in pipelines.withLockedValue({ Array($0.values) }) { pipeline.stop() }
                        }
                    }
                    retiring.removeAll()
                    if !machine.sinksWaiting { sinksWaiting.withLockedValue { $0 = false } }
                }
                var retiring: [String: SinkPipeline] = [:]
                func startPipeline(_ sink: String) {
                    // check() said ready: the address parses and the family is configured.
                    guard let address = try? SinkAddress.parse(identity: sink),
                        let familyName = address.prefix.configFamily
                    else { return }
                    let current = generation
                    guard let family = current.families[familyName],
                        let options = current.config.sinks.options(for: familyName)
                    else { return }
                    let sinksWaiting = self.sinksWaiting
                    let pipeline = SinkPipeline(
                        address: address, options: options, family: family, wal: wal, deadLetters: deadLetters,
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
                // Sinks with records from before this start, read in the order the machine gives.
                for read in DispatcherStateMachine.startupReads {
                    switch read {
                    case .drainNewSinks: _ = wal.drainNewSinks()
                    case .listLog: execute(machine.consider(wal.sinksInLog().keys.sorted(), limit: limit, check: check))
                    }
                }
                watchNewSinks()
                awaitNewSinks()
                for await event in group {
                    // Cancelled (the service group is going down hard): stop like a shutdown,
                    // never restart a pipeline that only left because of it.
                    if Task.isCancelled || stopped.withLockedValue({ $0 }) { execute(machine.shutdown()) }
                    switch event {
                    case .newSinks:
                        guard !machine.stopped else { continue }
                        if state.withLockedValue({ s in
                            defer { s.reloadPending = false }; return s.reloadPending
                        }) {
                            execute(machine.reloaded(inLog: wal.sinksInLog().keys.sorted(), limit: limit, check: check))
                        }
                        execute(machine.consider(wal.drainNewSinks().sorted(), limit: limit, check: check))
                        watchNewSinks()
                        awaitNewSinks()
                    case .exited(let sink):
                        let exited = pipelines.withLockedValue { $0.removeValue(forKey: sink) }
                        logger.debug("pipeline stopped", metadata: ["sink": "\(sink)"])
                        retireIdleFamilies(exited: sink)
                        // Records handed out but not finished (a pipeline stopped by a reload), or
                        // a record that arrived while it was leaving: a new pipeline takes over.
                        let progress = wal.progress(of: sink)
                        let recordsLeft =
                            !progress.outstanding.isEmpty || wal.hasRecords(sink: sink, after: progress.readUpTo)
                        if let exited { retiring[sink] = exited }
                        execute(machine.exited(sink, recordsLeft: recordsLeft, limit: limit, check: check))
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

    /// Fires `signal` once the WAL has records for a sink without a pipeline (checked after each
    /// round that holds records of a sink no pipeline watches), reading the WAL in the order the
    /// machine gives.
    private func watchNewSinks() {
        let signal = self.signal
        let pipelines = self.pipelines
        let wal = self.wal
        @Sendable func check() {
            guard !wal.isStopping else { return }
            var seen: UInt64 = 0
            var fresh = false
            for read in DispatcherStateMachine.watchReads {
                switch read {
                case .durableSeq: seen = wal.currentStats.durableSeq
                case .newSinks:
                    fresh = wal.peekNewSinks().contains { sink in pipelines.withLockedValue { $0[sink] == nil } }
                }
            }
            if fresh {
                signal.fire()
            } else {
                wal.whenUnwatchedData(after: seen) { check() }
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
