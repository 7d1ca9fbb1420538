/// The dispatcher's decisions, I/O-free (DeliveryService executes them): which sinks get a
/// pipeline, which wait for a slot (`delivery.max_sinks`, the descriptor budget), which are parked
/// because nothing can deliver them, and what happens when a pipeline leaves or sinkd stops.
///
/// Invariants:
/// - At most `limit` pipelines are live; a sink over the limit waits, first come first served,
///   and is never dropped: it starts when a pipeline leaves.
/// - A sink gets at most one pipeline; none after `shutdown()`.
/// - A sink nothing can deliver (its name does not parse, its family is not configured) is parked
///   and logged once, until a reload (`reloaded`) or its pipeline question is asked again after
///   it left the WAL.
/// - A pipeline that leaves with records still to deliver (stopped by a reload, or a record came
///   while it was leaving) is started again; one that leaves with nothing has its series retired.
struct DispatcherStateMachine {
    /// What the service found about a sink it asks to start (its name, its family).
    enum SinkCheck: Equatable {
        case ready
        case unparseable
        case unconfigured
    }

    enum Action: Equatable {
        /// Make and run a pipeline for the sink.
        case start(String)
        /// The sink's records stay in the WAL: say so once.
        case parkedUnparseable(String)
        case parkedUnconfigured(String)
        /// Sinks now wait for a slot: idle pipelines should leave at once rather than at
        /// idle_timeout.
        case nudgeIdlePipelines
        /// The pipeline left with nothing to deliver: its metric series go.
        case retireMetrics(String)
        /// Stop every live pipeline (their in-flight batches get the shutdown timeout).
        case stopAll
    }

    /// The two reads of the WAL at start, in this order: the new sinks drained first, then the
    /// log listed. A round completing between them is in the list (its segment summary is
    /// updated before it counts as new); one completing later wakes the watch. The other order
    /// lost it: listed too early, then drained away unseen (seen twice in CI).
    enum StartupRead: Equatable { case drainNewSinks, listLog }
    static let startupReads: [StartupRead] = [.drainNewSinks, .listLog]

    /// The new-sink watch's two reads, in this order: the durable seq it will wait after, then the
    /// new sinks. A round completing between them is among the new sinks, or past the seq (the
    /// wait returns at once). The other order waited after a round it had not seen.
    enum WatchRead: Equatable { case durableSeq, newSinks }
    static let watchReads: [WatchRead] = [.durableSeq, .newSinks]

    private(set) var live = Set<String>()
    private(set) var waiting: [String] = []
    private var waitingSet = Set<String>()
    private var parked = Set<String>()
    private(set) var stopped = false

    /// Whether sinks wait for a slot (pipelines read it to leave early when idle).
    var sinksWaiting: Bool { !waiting.isEmpty }

    /// The sinks in `sinks` without a pipeline should have one.
    mutating func consider(_ sinks: some Sequence<String>, limit: Int, check: (String) -> SinkCheck) -> [Action] {
        var actions: [Action] = []
        for sink in sinks { consider(sink, limit: limit, check: check, into: &actions) }
        return actions
    }

    /// A reload: sinks parked for a missing family may have one now, and every sink in the log
    /// without a pipeline is looked at again.
    mutating func reloaded(inLog: some Sequence<String>, limit: Int, check: (String) -> SinkCheck) -> [Action] {
        parked.removeAll()
        return consider(inLog, limit: limit, check: check)
    }

    /// The pipeline of `sink` left; `recordsLeft`: the WAL still holds records of it that are
    /// not finished.
    mutating func exited(_ sink: String, recordsLeft: Bool, limit: Int, check: (String) -> SinkCheck) -> [Action] {
        live.remove(sink)
        guard !stopped else { return [] }
        var actions: [Action] = []
        if recordsLeft {
            consider(sink, limit: limit, check: check, into: &actions)
        } else {
            // No state or series is kept for a sink that may never come back (15,000 one-off
            // sinks must not mean 15,000 series).
            actions.append(.retireMetrics(sink))
            parked.remove(sink)
        }
        while !waiting.isEmpty, live.count < limit {
            let next = waiting.removeFirst()
            waitingSet.remove(next)
            consider(next, limit: limit, check: check, into: &actions)
        }
        return actions
    }

    /// sinkd stops (gracefully, or its task group was cancelled): no pipeline starts again.
    mutating func shutdown() -> [Action] {
        guard !stopped else { return [] }
        stopped = true
        return [.stopAll]
    }

    private mutating func consider(
        _ sink: String, limit: Int, check: (String) -> SinkCheck, into actions: inout [Action]
    ) {
        guard !stopped, !live.contains(sink), !waitingSet.contains(sink) else { return }
        switch check(sink) {
        case .unparseable:
            if parked.insert(sink).inserted { actions.append(.parkedUnparseable(sink)) }
        case .unconfigured:
            if parked.insert(sink).inserted { actions.append(.parkedUnconfigured(sink)) }
        case .ready:
            guard live.count < limit else {
                if waiting.isEmpty { actions.append(.nudgeIdlePipelines) }
                waiting.append(sink)
                waitingSet.insert(sink)
                return
            }
            live.insert(sink)
            actions.append(.start(sink))
        }
    }
}
