/// A pipeline's reading decisions, I/O-free (SinkPipeline executes them): whether to read its
/// WAL records now, where (on its loop or the thread pool) and how much, whether to wait for new
/// records or for room in the shared byte budget, and when an idle pipeline leaves.
///
/// Invariants:
/// - A pipeline holding nothing always reads its next record, whatever the shared budget says
///   (one record past the budget, never a sink starved by others).
/// - After a read that went to the end of what was durable, the next read waits for new data (no
///   empty read per record), and the data watch is armed once per wait.
/// - A read on the loop is only of records the pipeline was just told of, at most
///   `inlineReadBytes`; anything behind is read on the thread pool.
/// - An idle pipeline leaves at `idle_timeout` after it last read (at once when other sinks wait
///   for a slot), and only if the WAL holds nothing more for it.
struct PipelineReadState {
    static let inlineReadBytes = 256 << 10
    static let poolReadBytes = 4 << 20

    /// Everything readable was read: wait for new data (or a wake) before reading again.
    private(set) var drained = false
    /// The last read reached the end of what was durable: the next records are fresh.
    private(set) var caughtUp = false
    /// The data watch is armed.
    private(set) var waitingForData = false
    /// A wake-up is registered with the shared budget.
    private(set) var waitingForBudget = false
    /// Since when (ms) the pipeline has had nothing to do.
    private(set) var idleSince: UInt64?

    enum Read: Equatable {
        case none
        /// Register for a nudge when the shared budget has room again.
        case waitForBudget
        /// Read up to `maxBytes` of payload here, on the pipeline's loop.
        case inline(maxBytes: Int)
        /// Read up to `maxBytes` on the thread pool (blocking reads).
        case onPool(maxBytes: Int)
    }

    /// What to read now. `wantsRecords`/`bytesWanted`: the state machine's room; `budgetLeft`:
    /// bytes left in the shared budget; `holding`: records the pipeline holds.
    mutating func nextRead(wantsRecords: Bool, bytesWanted: Int, budgetLeft: Int, holding: Int) -> Read {
        guard wantsRecords, !drained else { return .none }
        let left = budgetLeft == 0 && holding == 0 ? 1 : budgetLeft
        guard left > 0 else {
            if waitingForBudget { return .none }
            waitingForBudget = true
            return .waitForBudget
        }
        waitingForBudget = false
        if caughtUp { return .inline(maxBytes: max(1, min(Self.inlineReadBytes, bytesWanted, left))) }
        return .onPool(maxBytes: max(1, min(Self.poolReadBytes, bytesWanted, left)))
    }

    /// A read returned `count` records; `reachedEnd`: it read to the end of what was durable.
    mutating func read(count: Int, reachedEnd: Bool) {
        caughtUp = reachedEnd
        if count == 0 || reachedEnd { drained = true }
        if count > 0 { idleSince = nil }
    }

    /// Arm the data watch now? (Once per wait, while the pipeline wants records.)
    mutating func shouldWatchForData(wantsRecords: Bool) -> Bool {
        guard drained, !waitingForData, wantsRecords else { return false }
        waitingForData = true
        return true
    }

    /// The watch fired: records are durable for this sink.
    mutating func newData() {
        waitingForData = false
        drained = false
    }

    /// A wake-up fired (a retry time, the idle deadline, a failed read's retry): look again.
    mutating func woke() {
        drained = false
    }

    /// Read on at once rather than wait for an event: the last read returned records and was not
    /// the end, and there is room for more.
    func readOn(readRecords: Bool, wantsRecords: Bool) -> Bool {
        readRecords && wantsRecords && !drained
    }

    enum Idle: Equatable {
        /// Not idle.
        case busy
        /// Idle until `deadline` (arm a wake-up for it); `mayLeave`: leave now if the WAL holds
        /// nothing more for the sink (the deadline passed, or other sinks wait for a slot).
        case idle(deadline: UInt64, mayLeave: Bool)
    }

    /// The pipeline has nothing in flight or waiting (`machineIdle`): when may it leave?
    mutating func idle(machineIdle: Bool, now: UInt64, idleTimeoutMillis: UInt64, othersWaiting: Bool) -> Idle {
        guard machineIdle, drained else { return .busy }
        let since = idleSince ?? now
        idleSince = since
        let deadline = since + idleTimeoutMillis
        return .idle(deadline: deadline, mayLeave: now >= deadline || othersWaiting)
    }
}
