#if canImport(Glibc)
import Glibc
#endif
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOPosix
import SinkdCore
import SinkdWAL

/// Counters and state of one pipeline, readable while it runs (status, metrics).
public struct PipelineSnapshot: Sendable, Equatable {
    public enum State: String, Sendable { case up, down, paused, idle, stopping }
    public var sink: String
    public var state: State = .up
    public var lastError: String?
    public var delivered: UInt64 = 0
    public var retried: UInt64 = 0
    public var deadLettered: UInt64 = 0
    public var inFlight = 0
    public var held = 0
    /// Payload bytes of the records held (waiting or in flight).
    public var heldBytes = 0
}

/// Runs one sink's `PipelineStateMachine`: reads the sink's records from the WAL, sends batches
/// through the sink's client, applies outcomes (dead letters first, then progress), waits for
/// new records, retry times and reconnects. Exits when stopped, or after `idle_timeout` with
/// nothing to do.
public final class SinkPipeline: Sendable {
    public let address: SinkAddress
    let options: PipelineOptions
    let family: any SinkFamily
    let wal: WriteAheadLog
    let deadLetters: DeadLetterStore
    let logger: Logger
    let shutdownTimeout: Duration
    private let events = EventQueue<Event>()
    private let snapshotBox: NIOLockedValueBox<PipelineSnapshot>
    private let stopping = NIOLockedValueBox(false)
    private let metrics: PipelineMetrics
    /// Other sinks wait for a pipeline slot: leave as soon as idle, not after idle_timeout.
    private let othersWaiting: @Sendable () -> Bool
    private let heldBytesPerSink: Int
    private let heldBudget: HeldBytesBudget?
    /// The loop the pipeline's task, its sends and its timer run on.
    private let executor: EventLoopExecutor

    enum Event: Sendable {
        case completed(UInt64, [DeliveryOutcome])
        case connectionFailed(UInt64, String)
        case newData
        /// The armed wake-up for this deadline fired.
        case wake(UInt64)
        /// Look again whether to leave (other sinks wait for a slot).
        case nudge
        case stop
    }

    public init(
        address: SinkAddress, options: PipelineOptions, family: any SinkFamily, wal: WriteAheadLog,
        deadLetters: DeadLetterStore, shutdownTimeout: Duration, logger: Logger,
        othersWaiting: @escaping @Sendable () -> Bool = { false }, heldBytesPerSink: Int = .max,
        heldBudget: HeldBytesBudget? = nil
    ) {
        self.address = address
        self.heldBytesPerSink = heldBytesPerSink
        self.heldBudget = heldBudget
        self.othersWaiting = othersWaiting
        self.options = options
        self.family = family
        self.wal = wal
        self.deadLetters = deadLetters
        self.shutdownTimeout = shutdownTimeout
        var logger = logger
        logger[metadataKey: "sink"] = "\(address.identity)"
        self.logger = logger
        snapshotBox = NIOLockedValueBox(PipelineSnapshot(sink: address.identity))
        metrics = PipelineMetrics(sink: address.identity)
        executor = EventLoopExecutor(loop: MultiThreadedEventLoopGroup.singleton.next())
    }

    public var snapshot: PipelineSnapshot { snapshotBox.withLockedValue { $0 } }

    /// The pipeline left with nothing to deliver: its metric series go (they start again from 0
    /// if the sink comes back, which Prometheus' rate() reads as a counter reset).
    public func retireMetrics() {
        metrics.destroy()
    }

    /// Other sinks are waiting: an idle pipeline checks at once whether it can leave.
    public func nudge() {
        events.yield(.nudge)
    }

    /// Asks the pipeline to finish: no new batch is sent; in-flight batches get up to
    /// `delivery.shutdown_timeout`.
    public func stop() {
        stopping.withLockedValue { $0 = true }
        events.yield(.stop)
    }

    /// Runs until stopped or idle, on the pipeline's event loop.
    public func run() async {
        if #available(macOS 15.0, *) {
            await withTaskExecutorPreference(executor) { await runLoop() }
        } else {
            await runLoop()
        }
    }

    private func runLoop() async {
        let limits = family.limits(for: address, options: options)
        var machine = PipelineStateMachine(
            settings: .init(limits: limits, options: options, byteLimit: heldBytesPerSink))
        let reader = wal.reader(for: address.identity)
        var client: (any SinkClient)?
        let order = SendOrder()
        // The reading decisions (PipelineReadState); this loop does the reads and waits.
        var reading = PipelineReadState()
        var timer = WakeTimer(loop: executor.loop)
        // Bytes this pipeline has reported to the shared budget; all of it is returned on exit.
        var reportedHeld = 0
        let heldBudget = self.heldBudget
        func reportHeld() {
            let delta = machine.heldBytes - reportedHeld
            reportedHeld = machine.heldBytes
            heldBudget?.adjust(by: delta)
        }
        defer { heldBudget?.adjust(by: -reportedHeld) }
        var generator = SystemRandomNumberGenerator()
        let sink = address.identity
        let newData = self.events
        let dataWatch = wal.watchData(sink: sink) { newData.yield(.newData) }
        defer {
            timer.cancel()
            wal.forgetDataWatch(dataWatch)
        }

        func now() -> UInt64 { WallClock.millis() }
        func wake(at millis: UInt64) {
            let events = self.events
            timer.arm(at: millis, now: now()) { events.yield(.wake(millis)) }
        }
        // Dead letters are logged one by one up to 5 per 10 s, then as one summary line per
        // window: a sink refusing everything must not log a line per record.
        var deadLetterWindowStart: UInt64 = 0
        var deadLettersLoggedInWindow = 0
        var deadLettersUnlogged = 0
        func logDeadLetters(_ letters: [PipelineStateMachine.DeadLetter]) {
            let t = now()
            if t >= deadLetterWindowStart + 10_000 {
                if deadLettersUnlogged > 0 {
                    logger.warning(
                        "dead-lettered more records (not logged one by one)",
                        metadata: ["count": "\(deadLettersUnlogged)", "seconds": "10"])
                }
                deadLetterWindowStart = t
                deadLettersLoggedInWindow = 0
                deadLettersUnlogged = 0
            }
            for d in letters {
                guard deadLettersLoggedInWindow < 5 else {
                    deadLettersUnlogged += 1
                    continue
                }
                deadLettersLoggedInWindow += 1
                logger.warning(
                    "dead-lettered a record",
                    metadata: [
                        "id": "\(d.item.entry.record.id)", "seq": "\(d.item.seq)", "attempts": "\(d.item.attempts)",
                        "error": "\(d.reason)",
                    ])
            }
        }
        func apply(_ effects: consuming PipelineStateMachine.Effects) async {
            await act(on: effects)
            // Its arrays back to the machine, for the next completion (act's copies are gone).
            var used = consume effects
            machine.recycle(&used)
        }
        func act(on effects: PipelineStateMachine.Effects) async {
            var finished = effects.finished
            if !effects.deadLetters.isEmpty {
                let entries = effects.deadLetters.map { d in
                    DeadLetterStore.Entry(
                        seq: d.item.seq, record: d.item.entry.record, error: d.reason, attempts: d.item.attempts,
                        firstAttemptMillis: d.item.firstAttemptMillis, lastAttemptMillis: d.item.lastAttemptMillis,
                        deadLetteredMillis: now())
                }
                // A dead letter must be on disk before its record leaves the WAL.
                var written = false
                while !written {
                    do {
                        try await NIOThreadPool.singleton.runIfActive { [deadLetters] in
                            try deadLetters.append(sink: sink, entries)
                        }
                        written = true
                    } catch {
                        // Not written: the records stay unfinished in the WAL (sent again after a restart).
                        if Task.isCancelled || stopping.withLockedValue({ $0 }) { break }
                        logger.error(
                            "cannot write dead letters; retrying in 1s (the records stay in the WAL)",
                            metadata: ["error": "\(error)"])
                        try? await Task.sleep(for: .seconds(1))
                    }
                }
                if written {
                    logDeadLetters(effects.deadLetters)
                } else {
                    let unwritten = Set(effects.deadLetters.map(\.item.seq))
                    finished.removeAll { unwritten.contains($0) }
                }
            }
            if !finished.isEmpty { wal.markFinished(sink: sink, seqs: finished) }
            if effects.delivered > 0 {
                metrics.delivered.increment(by: effects.delivered)
                let t = now()
                for accepted in effects.deliveredAcceptedAt where accepted > 0 && t >= accepted {
                    metrics.latency.recordMilliseconds(Int64(t - accepted))
                }
            }
            if effects.retried > 0 { metrics.retried.increment(by: effects.retried) }
            if !effects.deadLetters.isEmpty { metrics.deadLettered.increment(by: effects.deadLetters.count) }
            if let change = effects.healthChanged {
                switch change {
                case .up: logger.notice("sink is up again")
                case .down(let reason):
                    logger.warning(
                        "sink is down; pausing it and reconnecting with backoff", metadata: ["error": "\(reason)"])
                }
            }
            snapshotBox.withLockedValue { s in
                s.delivered += UInt64(effects.delivered)
                s.retried += UInt64(effects.retried)
                s.deadLettered += UInt64(effects.deadLetters.count)
                switch machine.health {
                case .up:
                    s.state = .up
                    s.lastError = effects.deadLetters.last?.reason ?? s.lastError
                case .down(let reason):
                    s.state = .down
                    s.lastError = reason
                }
                s.inFlight = machine.inFlightRecords
                s.held = machine.heldRecords
                s.heldBytes = machine.heldBytes
            }
        }

        loop: while true {
            let isStopping = stopping.withLockedValue { $0 }
            if isStopping || Task.isCancelled { break }
            reportHeld()
            // Read while there is room (in this sink's and in the total byte budget) and the WAL
            // has more. A pipeline holding nothing always reads its next record.
            var readRecords = false
            let maxRecords = max(limits.maxBatchCount * 2, 256)
            let read = reading.nextRead(
                wantsRecords: machine.wantsRecords, bytesWanted: machine.bytesWanted,
                budgetLeft: heldBudget?.available ?? .max, holding: machine.heldRecords)
            switch read {
            case .none:
                break
            case .waitForBudget:
                let events = self.events
                heldBudget?.whenAvailable { events.yield(.nudge) }
            case .inline(let maxBytes), .onPool(let maxBytes):
                do {
                    // Told of new records while caught up: they were written a moment ago and are
                    // in the page cache, so a small read runs here, on the loop, rather than
                    // hopping to the thread pool and back (two wake-ups per record at
                    // Conductor's pace). A pipeline that is behind reads there.
                    let batch =
                        read == .inline(maxBytes: maxBytes)
                        ? try reader.next(maxRecords: maxRecords, maxBytes: maxBytes)
                        : try await NIOThreadPool.singleton.runIfActive {
                            try reader.next(maxRecords: maxRecords, maxBytes: maxBytes)
                        }
                    reading.read(count: batch.count, reachedEnd: reader.reachedEnd)
                    if !batch.isEmpty {
                        await apply(machine.add(batch))
                        readRecords = true
                    }
                } catch {
                    logger.error("cannot read the WAL for this sink; retrying in 1s", metadata: ["error": "\(error)"])
                    wake(at: now() + 1000)
                }
            }
            if reading.shouldWatchForData(wantsRecords: machine.wantsRecords) {
                wal.arm(dataWatch, after: reader.caughtUpTo)
            }
            // Send what can be sent.
            var waitUntil: UInt64?
            sending: while true {
                switch machine.next(now: now()) {
                case .send(let id, let records):
                    if client == nil {
                        do {
                            client = try family.makeClient(for: address, options: options)
                        } catch {
                            await apply(
                                machine.connectionFailed(
                                    batchID: id, error: error.message, now: now(),
                                    random: { Double.random(in: 0..<1, using: &generator) }))
                            continue sending
                        }
                    }
                    let c = client!
                    let events = self.events
                    // Each send starts once the one before it is queued on its connection: batches
                    // in flight at once still reach a one-connection broker in WAL order.
                    let ticket = order.issue()
                    spawn {
                        await order.wait(for: ticket)
                        do throws(SinkConnectionError) {
                            let outcomes = try await c.send(records, queued: { order.queued(ticket) })
                            order.queued(ticket)
                            events.yield(.completed(id, outcomes))
                        } catch {
                            order.queued(ticket)
                            events.yield(.connectionFailed(id, error.message))
                        }
                    }
                case .wait(let until):
                    waitUntil = until
                    break sending
                }
            }
            if let waitUntil { wake(at: waitUntil) }
            if case .idle(let deadline, let mayLeave) = reading.idle(
                machineIdle: machine.isIdle, now: now(),
                idleTimeoutMillis: UInt64(max(0, options.idleTimeout.milliseconds)),
                othersWaiting: othersWaiting())
            {
                if mayLeave, !wal.hasRecords(sink: sink, after: reader.caughtUpTo) { break loop }
                if waitUntil == nil { wake(at: deadline) }
                snapshotBox.withLockedValue { $0.state = .idle }
            }
            // The last read returned records and there is room for more: read on rather than wait
            // for an event, which might be a completion that takes long (a broker blocking
            // publishes). Only after records: a failing read waits for its retry time.
            if reading.readOn(readRecords: readRecords, wantsRecords: machine.wantsRecords) { continue loop }
            // Wait for something to happen.
            guard let event = await events.next() else { break }
            switch event {
            case .completed(let id, let outcomes):
                await apply(
                    machine.completed(
                        batchID: id, outcomes: outcomes, now: now(),
                        random: { Double.random(in: 0..<1, using: &generator) }))
            case .connectionFailed(let id, let error):
                await apply(
                    machine.connectionFailed(
                        batchID: id, error: error, now: now(), random: { Double.random(in: 0..<1, using: &generator) }))
                await client?.close()
                client = nil
            case .newData:
                reading.newData()
            case .wake(let deadline):
                timer.fired(deadline)
                reading.woke()
            case .nudge:
                continue loop
            case .stop:
                break loop
            }
        }
        // Stopping: give in-flight batches their time, then leave the rest in the WAL.
        snapshotBox.withLockedValue { $0.state = .stopping }
        let deadline = now() + UInt64(max(0, shutdownTimeout.milliseconds))
        wake(at: deadline)
        while !machine.inFlight.isEmpty, now() < deadline, let event = await events.next() {
            switch event {
            case .completed(let id, let outcomes):
                await apply(machine.completed(batchID: id, outcomes: outcomes, now: now(), random: { 0.5 }))
            case .connectionFailed(let id, let error):
                await apply(machine.connectionFailed(batchID: id, error: error, now: now(), random: { 0.5 }))
            default:
                continue
            }
        }
        if !machine.inFlight.isEmpty {
            logger.warning(
                "stopped with batches still in flight; they will be sent again after the next start",
                metadata: ["records": "\(machine.inFlightRecords)"])
        }
        await client?.close()
    }

    /// A send's task, on the pipeline's loop as well.
    private func spawn(_ body: @escaping @Sendable () async -> Void) {
        if #available(macOS 15.0, *) {
            // Detached: a send needs none of the pipeline task's task-local values (the
            // service group's shutdown handler), and copying them was two heap calls per send.
            Task.detached(executorPreference: executor, operation: body)
        } else {
            Task(operation: body)
        }
    }

}

/// Per-sink counters and the delivery latency histogram (docs/METRICS.md).
struct PipelineMetrics: Sendable {
    let delivered: Counter
    let retried: Counter
    let deadLettered: Counter
    let latency: Metrics.Timer

    init(sink: String) {
        delivered = Counter(label: "sinkd_delivered_total", dimensions: [("sink", sink)])
        retried = Counter(label: "sinkd_retried_total", dimensions: [("sink", sink)])
        deadLettered = Counter(label: "sinkd_dead_lettered_total", dimensions: [("sink", sink)])
        latency = Metrics.Timer(label: "sinkd_delivery_latency_seconds", dimensions: [("sink", sink)])
    }

    /// The sink's series leave the exposition (a sink reaped with nothing left to deliver).
    func destroy() {
        delivered.destroy()
        retried.destroy()
        deadLettered.destroy()
        latency.destroy()
    }
}
