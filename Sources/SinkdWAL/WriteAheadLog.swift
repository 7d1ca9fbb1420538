#if canImport(Glibc)
import Glibc
#endif
import Logging
import SinkdCore

// # sinkd's write-ahead log
//
// ## Invariants
// 1. A record is reported durable (its append's `whenDurable` callback succeeds) only after the
//    write and, with `fsync: always`, the fdatasync covering it returned successfully. Many
//    records share one fdatasync (group commit): one per writer round, never one per record.
// 2. After a failed write or fdatasync, no record of that round is reported durable, and no record
//    already reported durable is removed: the failed round's frames are cut off (only those), the
//    segment is closed, and writing continues in a new segment file (the page cache of the failed
//    one is not trusted again). With `fsync: interval` the writer keeps its own copy of the frames
//    reported durable since the last successful fdatasync; after a failure they are written again
//    into the new segment and synced before anything else, and only then cut from the old one
//    (WALWriter.swift, "Failures").
// 3. Sequence numbers grow across restarts and are never reused for anything the progress file
//    mentions: each progress copy stores a seq above every seq assigned when it was saved, and
//    segments are deleted only after both copies hold it (the floor survives losing either).
//    A segment is named by the first seq it holds (or would hold), and the newest is kept while
//    empty (every start opens or reopens one named by the next seq): the directory holds the
//    floor too, so losing both progress copies at once cannot make seqs start again.
// 4. A record leaves the WAL (its segment is deleted) only when every record in the segment is
//    finished (delivered or dead-lettered) according to a progress file already on disk.
//    Deletion order: both progress copies fsynced, then unlink `<id>.wal`, then `<id>.idx`, then fsync the
//    directory. A crash between any two steps leaves files that the next start recognises.
// 5. Start-up reads the progress file, each sealed segment's summary (`<id>.idx`, part 1) and
//    scans only segments without a valid summary (normally just the last one written before a
//    crash): it does not grow with the backlog, and no record payload is loaded into memory.
// 6. Recovery never crashes on bad data: a torn tail of the last segment is truncated; a corrupt
//    complete frame is skipped, counted and logged; an unreadable segment is moved to
//    `quarantine/` with a log line.
//
// ## On disk
// ```
// wal/
//   00000000000000000001.wal     segment: header, then frames; at most segment_size bytes
//   00000000000000000001.idx     its summary, written when it is sealed (SegmentSummary.swift)
//   progress.0, progress.1       finished records per sink and the seq floor, two identical
//                                copies saved in place (ProgressStore.swift, DeliveryProgress.swift)
//   lock                         the pid of the sinkd holding the directory's flock
//   quarantine/                  segments that could not be read, odd entries moved aside
// segment  = "SINKDWAL" u32 version=1 u32 reserved, frame*
// frame    = u32 bodyLength, u32 crc32c(body ‖ seq as u64 LE), u64 seq, body   (little-endian)
// body     = one EventRecord (RecordCodec.swift)
// ```
// The segment id in a file name is the first seq the segment was created for. Records never span
// segments. Frames in a segment have strictly increasing seqs; gaps are allowed (a failed round's
// seqs are not reused).
//
// ## Threads
// Appends come from any thread and only touch memory under `lock`. One writer thread performs
// the rounds (write, fdatasync, rotate); one maintenance thread saves progress and deletes
// finished segments. Sink readers do their own preads on the caller's thread.

/// What a round calls once it is on disk (or failed): a `whenDurable` callback, or a combined
/// append's with its outcomes, kept beside it rather than captured by a closure of their own (a
/// heap call per batch).
enum DurableCallback: Sendable {
    case plain(@Sendable (Result<Void, WALWriteError>) -> Void)
    case withOutcomes([AppendOutcome], @Sendable ([AppendOutcome], Result<Void, WALWriteError>) -> Void)

    func callAsFunction(_ result: Result<Void, WALWriteError>) {
        switch self {
        case .plain(let callback): callback(result)
        case .withOutcomes(let outcomes, let callback): callback(outcomes, result)
        }
    }
}

/// What one record's append turned into, decided at once under the lock.
public enum AppendOutcome: Sendable, Equatable {
    /// Will be durable when its batch's ticket completes; `seq` is its sequence number.
    case accepted(seq: UInt64)
    /// The same (sink, id) was accepted within the dedupe window as `seq`; nothing is written.
    case duplicate(seq: UInt64)
    /// The WAL is at `max_size`, or the records not yet written reached their memory budget
    /// (`WALOptions.pendingBudget`): wait with `whenSpaceAvailable`, or answer `wal_full`.
    case full
    /// The writer holds `pendingBudget` bytes not yet on disk: wait (`whenSpaceAvailable`) and retry.
    case busy
    case shuttingDown
}

public struct AppendTicket: Sendable, Equatable {
    /// The writer rounds that must succeed for every accepted or duplicate outcome to be durable.
    /// `0...0`: nothing to wait for (every outcome was a refusal or a duplicate of a durable record).
    public var rounds: ClosedRange<UInt64>
}

public struct WALWriteError: Error, Sendable, Equatable, CustomStringConvertible {
    public var underlying: FileError
    public var isNoSpace: Bool { underlying.isNoSpace }
    public var description: String { underlying.description }
}

public struct WALOptions: Sendable {
    public var directory: String
    public var segmentSize: Int
    public var maxSize: Int
    public var fsync: FsyncMode
    public var fsyncInterval: Duration
    public var whenFull: WhenFull
    public var dedupeWindow: Duration
    public var dedupeMaxEntries: Int
    /// How often finished records are saved to `progress` (and finished segments deleted).
    /// After a crash, records finished within this interval are sent again.
    public var checkpointInterval: Duration = .milliseconds(250)
    /// Bytes of records appended but not yet written to a segment (and, with `fsync: interval`,
    /// written but not yet synced) that sinkd holds in memory: beyond it appends answer `.full`
    /// until the writer catches up, whatever the disk does (a full disk, a slow fsync).
    public var pendingBudget: Int { max(16 << 20, segmentSize / 2) }

    public init(_ config: SinkdConfig) {
        directory = config.wal.directory
        segmentSize = config.wal.segmentSize
        maxSize = config.wal.maxSize
        fsync = config.wal.fsync
        fsyncInterval = config.wal.fsyncInterval
        whenFull = config.wal.whenFull
        dedupeWindow = config.delivery.dedupeWindow
        dedupeMaxEntries = config.delivery.dedupeMaxEntries
    }
}

/// Counters and gauges for status and metrics.
public struct WALStats: Sendable, Equatable {
    public var segments = 0
    public var bytes = 0
    public var nextSeq: UInt64 = 0
    public var durableSeq: UInt64 = 0
    public var appendedRecords: UInt64 = 0
    public var duplicateRecords: UInt64 = 0
    public var fsyncs: UInt64 = 0
    /// Progress checkpoints saved (each writes and fdatasyncs both progress slots).
    public var progressSaves: UInt64 = 0
    public var fsyncNanosTotal: UInt64 = 0
    public var failedRounds: UInt64 = 0
    /// Failed writes, fdatasyncs or rollovers (each counted once, retries included).
    public var writeFailures: UInt64 = 0
    /// Records reported durable whose fdatasync then failed, written again from sinkd's copy.
    public var rewrittenRecords: UInt64 = 0
    /// Records reported durable (`fsync: never`, or a rewrite that could not be done) whose
    /// fdatasync failed with no copy left to write again: at risk on a power loss, not otherwise.
    public var recordsAtRisk: UInt64 = 0
    /// Since when (CLOCK_REALTIME ms) the writer is holding records because the disk is full; 0
    /// when it is not.
    public var diskFullSinceMillis: UInt64 = 0
    /// Bytes of records held in memory, not yet in a segment (pendingBudget bounds it).
    public var pendingBytes = 0
    public var corruptFramesAtStart: UInt64 = 0
    /// Damaged frames met by readers while running (each place counted once).
    public var corruptFramesRunning: UInt64 = 0
    /// Records handed out before a restart found unreadable since (finished as lost).
    public var corruptRecordsLost: UInt64 = 0
    /// Acknowledged records found at start in no segment (a segment file missing): lost.
    public var missingRecordsLost: UInt64 = 0
    public var tornTailBytesAtStart: UInt64 = 0
    public var quarantinedSegments: Int = 0
    /// Time of the last round the writer finished: the watchdog's proof of progress.
    public var lastProgressNanos: UInt64 = 0
    /// When the round being written now was taken (CLOCK_MONOTONIC ns); 0 while the writer is
    /// idle. A round in writing for long means a stuck write or fsync.
    public var writingSinceNanos: UInt64 = 0
}

public final class WriteAheadLog: @unchecked Sendable {
    public let options: WALOptions
    let logger: Logger
    let lock = Lock()

    // MARK: state under `lock`

    struct Segment {
        var id: UInt64
        var summary: SegmentSummary
        /// Bytes readers may read: durable (or written, with fsync interval/never).
        var visibleSize: Int
        var sealed: Bool
        /// Bytes the file takes as far as sinkd knows (what `max_size` counts).
        var fileBytes: Int
    }

    struct Round {
        var number: UInt64
        var frames: [UInt8] = []
        var entries: [Entry] = []
        var callbacks: [(ClosedRange<UInt64>, DurableCallback)] = []
        /// Entries before this index are durable in a segment (sealed during this round, before
        /// a failure): a retry starts here, a failure keeps them.
        var durableEntries = 0
        /// Entries before this index were written into the active segment by the current attempt.
        var writtenEntries = 0

        struct Entry {
            var seq: UInt64
            var frameOffset: Int
            var frameLength: Int
            var sink: String
            var key: DedupeKey
            var acceptedAtMillis: UInt64
        }
    }

    var segments: [Segment] = []
    var nextSeq: UInt64 = 1
    var pending: Round
    var writing: Round?
    /// A written round's frame buffer kept for the next round (WALWriter.swift, `keepForReuse`).
    var spareFrames: [UInt8] = []
    /// A finished round's entry array, kept (emptied) for the next round. Under `lock`.
    var spareEntries: [Round.Entry] = []
    /// A finished round's callback array, kept (emptied) for the next round: touched only by the
    /// thread that writes rounds (the writer; `shutdown` when it never started), which runs the
    /// callbacks outside the lock and then opens the next round.
    var spareCallbacks: [(ClosedRange<UInt64>, DurableCallback)] = []
    /// The data watches a finished round woke, emptied, for the next round's: under `lock` while
    /// a round fills it, the writing thread's alone while it runs them.
    var spareWaiters: [@Sendable () -> Void] = []
    var completedRound: UInt64
    /// Every round that failed, as coalesced ranges: exact, whatever the history (a ticket may
    /// span any number of rounds).
    var failedRanges: [ClosedRange<UInt64>] = []
    let dedupe: DedupeTable
    var progress = DeliveryProgress()
    var progressDirty = false
    /// What the backlog figures need beyond summaries and progress (BacklogTracker.swift).
    var backlogTracker = BacklogTracker()
    /// Σ segments' fileBytes.
    var diskBytes = 0
    /// Frames appended but not in a segment file yet (pending, writing, a rewrite waiting).
    var reservedBytes = 0
    /// What `max_size` counts.
    var totalBytes: Int { diskBytes + reservedBytes }
    /// Set when ingest stops: appends are refused and a write blocked on a full disk gives up.
    var appendsClosed = false
    var spaceWaiters: [(bytes: Int, callback: @Sendable () -> Void)] = []
    /// Waiting for durable records of a sink that no pipeline watches (the dispatcher's watch
    /// for sinks that need a pipeline). Not woken by rounds of watched sinks only: at
    /// Conductor's pace that was a callback, a re-registration and three heap calls per record.
    var unwatchedWaiters: [@Sendable () -> Void] = []
    /// Each live pipeline's watch for durable records of its sink: a round wakes only the sinks
    /// it holds records of, not every idle pipeline; armed and fired without a heap call.
    var dataWatches: [String: DataWatch] = [:]
    /// Sinks that received durable records since `drainNewSinks()` was last called.
    var newSinks = Set<String>()
    var stopping = false
    var stopped = false
    /// The maintenance thread waits on this, not on `lock`'s condition: that one is broadcast
    /// at every append, and a checkpoint per append cost two fdatasyncs per record at a low
    /// pace. Broadcast when stopping.
    let maintenanceWake = Condition()
    /// Damaged places already reported, so that each is logged and copied once.
    var corruptionSeen = Set<CorruptionPlace>()
    var stats = WALStats()
    public internal(set) var recoveryReport = RecoveryReport()

    // MARK: state of the writer thread only

    var activeFD: CInt = -1
    var activePath = ""
    var activeSize = 0
    var activeDurableSize = 0
    /// The records in the active segment, in file order: its summary and dedupe keys are rebuilt
    /// exactly from these when a failure cuts frames off.
    var activeEntries: [ActiveEntry] = []
    /// `activeSize` when the current round started writing into the active segment.
    var activeRoundStart = 0
    /// `fsync: interval`: copies of the frames written after `activeDurableSize` and already
    /// reported durable, dropped at the next successful fdatasync.
    var unsynced = FrameCopy()
    /// Frames reported durable whose only trusted copy is this one (their fdatasync failed):
    /// written into a fresh segment before any new round.
    var rewrite = FrameCopy()
    /// After a rewrite: the segment to cut back to the size that was durable.
    var cutAfterRewrite: (id: UInt64, size: Int, keep: [ActiveEntry])?
    var lastSync = ContinuousClock.now
    var dirtySinceSync = false
    var failureLog = RateLimitedLog()
    /// The maintenance thread's.
    var progressLog = RateLimitedLog()

    /// The directory's flock (WALRecovery.swift), held until `shutdown()` ends.
    var lockFD: CInt = -1
    /// Keys of the segments recovery scanned, until the dedupe table is loaded.
    var scannedKeys: [UInt64: [SummaryKey]] = [:]
    lazy var progressStore = ProgressStore(directory: options.directory)

    var writerThread: pthread_t?
    var maintenanceThread: pthread_t?

    /// Opens the WAL in `options.directory`, recovering what a previous run left.
    public init(options: WALOptions, logger: Logger) throws(FileError) {
        self.options = options
        self.logger = logger
        self.dedupe = DedupeTable(maxEntries: options.dedupeMaxEntries, window: options.dedupeWindow)
        self.pending = Round(number: 1)
        self.completedRound = 0
        try recover()
        backlogTracker = BacklogTracker(summaries: segments.map(\.summary), progress: progress)
        do {
            if try !reopenEmptyNewestSegment() { try openNewActiveSegment() }
        } catch  where error.isNoSpace {
            // A full disk must not stop sinkd from starting and delivering (which frees space):
            // the writer opens the segment with the first round that finds room.
            logger.warning(
                "no space for a new WAL segment at start; records wait until space returns",
                metadata: ["directory": "\(directory)", "error": "\(error)"])
        }
    }

    deinit {
        if activeFD >= 0 { close(activeFD) }
        if lockFD >= 0 { close(lockFD) }
    }

    var directory: String { options.directory }
    func path(_ name: String) -> String { directory + "/" + name }

    // MARK: appending

    /// Decides each record's outcome now; accepted records become durable when the ticket
    /// completes (see `whenDurable`). With `when_full: block`, stops at the first record that does
    /// not fit: its outcome is `.full` and the records after it are left for the caller to retry
    /// once `whenSpaceAvailable` fires. `.busy` (whatever `when_full` says) stops the same way:
    /// the writer has `pendingBudget` bytes in hand; retry when `whenSpaceAvailable` fires.
    /// `checkDuplicates: false` appends even records whose (sink, id) was seen recently (a replay
    /// of dead letters); they are still remembered for later duplicates.
    public func append(
        _ records: [EventRecord], nowMillis: UInt64, checkDuplicates: Bool = true
    ) -> (outcomes: [AppendOutcome], ticket: AppendTicket) {
        append(records, nowMillis: nowMillis, checkDuplicates: checkDuplicates, durable: nil)
    }

    /// `append` and `whenDurable` in one step: `callback` gets the outcomes and runs once every
    /// round they depend on is on disk (on the writer thread), or at once on the caller's thread
    /// before this returns when they depend on none in progress (duplicates of durable records,
    /// refusals). One critical section, not two: the writer this append wakes would otherwise find
    /// the lock held by the caller's `whenDurable` (a futex wait and a context switch of the
    /// caller per round, measured at Conductor's pace).
    @discardableResult
    public func append(
        _ records: [EventRecord], nowMillis: UInt64, checkDuplicates: Bool = true,
        whenDurable callback: @escaping @Sendable ([AppendOutcome], Result<Void, WALWriteError>) -> Void
    ) -> [AppendOutcome] {
        append(records, nowMillis: nowMillis, checkDuplicates: checkDuplicates, durable: callback).outcomes
    }

    private func append(
        _ records: [EventRecord], nowMillis: UInt64, checkDuplicates: Bool,
        durable: (@Sendable ([AppendOutcome], Result<Void, WALWriteError>) -> Void)?
    ) -> (outcomes: [AppendOutcome], ticket: AppendTicket) {
        // Encoding and the body checksum happen outside the lock, into one buffer for the batch:
        // the calling thread's, kept from its last append (two heap calls fewer per batch).
        let scratch = AppendScratch.current
        var bodies = scratch.takeBodies()
        var items = scratch.takeItems()
        defer { scratch.keep(&bodies, &items) }
        bodies.reserveCapacity(records.reduce(0) { $0 + RecordCodec.encodedSize($1) })
        items.reserveCapacity(records.count)
        for r in records {
            let start = bodies.count
            RecordCodec.encode(r, acceptedAtMillis: nowMillis, into: &bodies)
            var crc = CRC32C()
            bodies.withUnsafeBytes { crc.update(UnsafeRawBufferPointer(rebasing: $0[start...])) }
            items.append((start..<bodies.count, crc, DedupeKey(sink: r.sink, id: r.id)))
        }
        let (outcomes, ticket, wakeWriter, immediate) = lock.withLock {
            bodies.withUnsafeBytes { bodies in
                var outcomes: [AppendOutcome] = []
                outcomes.reserveCapacity(records.count)
                var lowRound = UInt64.max
                var highRound: UInt64 = 0
                for (i, item) in items.enumerated() {
                    if stopping || appendsClosed {
                        outcomes.append(.shuttingDown)
                        continue
                    }
                    if checkDuplicates, let seq = dedupe.lookUp(item.key, now: nowMillis) {
                        outcomes.append(.duplicate(seq: seq))
                        if let round = roundHolding(seq) {
                            lowRound = min(lowRound, round)
                            highRound = max(highRound, round)
                        }
                        stats.duplicateRecords += 1
                        continue
                    }
                    let frameLength = SegmentFormat.frameHeaderSize + item.body.count
                    if totalBytes + frameLength > options.maxSize {
                        outcomes.append(.full)
                        if options.whenFull == .block { break }
                        continue
                    }
                    if reservedBytes > 0, reservedBytes + frameLength > options.pendingBudget {
                        outcomes.append(.busy)
                        break
                    }
                    let seq = nextSeq
                    nextSeq += 1
                    let offset = pending.frames.count
                    SegmentFormat.appendFrame(
                        seq: seq, body: UnsafeRawBufferPointer(rebasing: bodies[item.body]), bodyCRC: item.crc,
                        to: &pending.frames)
                    pending.entries.append(
                        Round.Entry(
                            seq: seq, frameOffset: offset, frameLength: frameLength, sink: records[i].sink,
                            key: item.key, acceptedAtMillis: nowMillis))
                    reservedBytes += frameLength
                    dedupe.insert(item.key, seq: seq, now: nowMillis)
                    outcomes.append(.accepted(seq: seq))
                    lowRound = min(lowRound, pending.number)
                    highRound = pending.number
                    stats.appendedRecords += 1
                }
                // Only the rounds this batch's outcomes depend on: a batch of duplicates of durable
                // records, or of refusals, completes at once.
                let ticket = AppendTicket(rounds: highRound == 0 ? 0...0 : lowRound...highRound)
                var immediate: Result<Void, WALWriteError>?
                if let durable { immediate = registerDurable(ticket, .withOutcomes(outcomes, durable)) }
                return (outcomes, ticket, !pending.entries.isEmpty, immediate)
            }
        }
        // After the lock is released: a writer woken while we held it would wake only to block on
        // the mutex (a second context switch per round).
        if wakeWriter { lock.broadcast() }
        if let durable, let immediate {
            scratch.keep(&bodies, &items)  // the callback may append again on this thread
            durable(outcomes, immediate)
        }
        return (outcomes, ticket)
    }

    /// The bytes `record` takes in a segment: what `whenSpaceAvailable` must find room for.
    public static func frameLength(of record: EventRecord) -> Int {
        SegmentFormat.frameHeaderSize + RecordCodec.encodedSize(record)
    }

    /// The round in which `seq` is being written; nil once it is durable.
    private func roundHolding(_ seq: UInt64) -> UInt64? {
        // Entries are in seq order: a range check, not a scan (this runs per duplicate).
        if let writing, writing.durableEntries < writing.entries.count,
            seq >= writing.entries[writing.durableEntries].seq, seq <= writing.entries[writing.entries.count - 1].seq
        {
            return writing.number
        }
        if let first = pending.entries.first?.seq, seq >= first { return pending.number }
        return nil
    }

    /// Whether any round in `rounds` failed. Under `lock`.
    func anyFailed(_ rounds: ClosedRange<UInt64>) -> Bool {
        failedRanges.contains { $0.overlaps(rounds) }
    }

    /// Records that round `number` failed. Under `lock`.
    func recordFailure(round number: UInt64) {
        if let last = failedRanges.last, last.upperBound + 1 >= number {
            failedRanges[failedRanges.count - 1] = last.lowerBound...max(last.upperBound, number)
        } else {
            failedRanges.append(number...number)
        }
    }

    /// Calls `callback` (on the writer thread, or at once) when every round of `ticket` is on disk,
    /// or with the error of the first that failed.
    public func whenDurable(
        _ ticket: AppendTicket, _ callback: @escaping @Sendable (Result<Void, WALWriteError>) -> Void
    ) {
        let (immediate, wakeWriter): (Result<Void, WALWriteError>?, Bool) = lock.withLock {
            let immediate = registerDurable(ticket, .plain(callback))
            return (immediate, immediate == nil && ticket.rounds.upperBound == pending.number)
        }
        if wakeWriter { lock.broadcast() }  // after the lock is released, as in append
        if let immediate { callback(immediate) }
    }

    /// Under `lock`: `ticket`'s result when it is complete already (call the callback then, after
    /// the lock), else nil with `callback` registered with the round that completes it.
    private func registerDurable(_ ticket: AppendTicket, _ callback: DurableCallback) -> Result<Void, WALWriteError>? {
        if ticket.rounds.upperBound <= completedRound {
            return anyFailed(ticket.rounds)
                ? .failure(
                    lastFailure ?? WALWriteError(underlying: FileError(operation: "write", path: directory, errno: EIO))
                )
                : .success(())
        }
        if ticket.rounds.upperBound == pending.number {
            pending.callbacks.append((ticket.rounds, callback))
        } else {
            writing!.callbacks.append((ticket.rounds, callback))
        }
        return nil
    }

    var lastFailure: WALWriteError?

    /// Returns once everything appended before the call is on disk (or failed).
    public func flush() async {
        let ticket = lock.withLock { AppendTicket(rounds: pending.number...pending.number) }
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            whenDurable(ticket) { _ in done.resume() }
        }
    }

    /// Ingest is stopping: refuse appends from now on (`.shuttingDown`), and let a round that is
    /// blocked on a full disk fail (answered retryable) instead of waiting for space. The writer
    /// keeps running (syncs, rewrites) until `shutdown()`.
    public func closeAppends() {
        let waiters: [@Sendable () -> Void] = lock.withLock {
            appendsClosed = true
            lock.broadcast()
            defer { spaceWaiters.removeAll() }
            return spaceWaiters.map(\.callback)
        }
        for w in waiters { w() }
    }

    /// Calls `callback` once the WAL has room for a frame of `bytes` (segments were deleted, or
    /// the writer caught up) or is stopping. Never at once when the frame still does not fit: a
    /// caller that retries on it cannot spin.
    public func whenSpaceAvailable(bytes: Int = 0, _ callback: @escaping @Sendable () -> Void) {
        let now: Bool = lock.withLock {
            if hasRoom(bytes) { return true }
            spaceWaiters.append((bytes, callback))
            return false
        }
        if now { callback() }
    }

    /// Under `lock`.
    func hasRoom(_ bytes: Int) -> Bool {
        stopping || appendsClosed
            || (totalBytes + bytes <= options.maxSize
                && (reservedBytes == 0 || reservedBytes + bytes <= options.pendingBudget))
    }

    /// The space waiters whose frame fits now, removed from the list. Under `lock`; call them after.
    func takeSpaceWaiters() -> [@Sendable () -> Void] {
        guard !spaceWaiters.isEmpty else { return [] }
        var ready: [@Sendable () -> Void] = []
        spaceWaiters.removeAll { waiter in
            guard hasRoom(waiter.bytes) else { return false }
            ready.append(waiter.callback)
            return true
        }
        return ready
    }

    /// Calls `callback` once a round makes records durable of a sink without a data watch
    /// (`watchData`: no live pipeline watches it); at once if any record after `seq` is durable
    /// already, or the WAL is stopping. The caller re-checks what it waits for and registers
    /// again: a round of watched sinks only does not call it.
    public func whenUnwatchedData(after seq: UInt64, _ callback: @escaping @Sendable () -> Void) {
        let now: Bool = lock.withLock {
            if stopping || stats.durableSeq > seq { return true }
            unwatchedWaiters.append(callback)
            return false
        }
        if now { callback() }
    }

    /// A pipeline's standing watch for durable records of `sink`, replacing an earlier one of
    /// the sink: `arm` it each time the pipeline has read everything (no closure or array per
    /// wait), `forgetDataWatch` when the pipeline leaves.
    public func watchData(sink: String, _ callback: @escaping @Sendable () -> Void) -> DataWatch {
        let watch = DataWatch(sink: sink, callback: callback)
        lock.withLock { dataWatches[sink] = watch }
        return watch
    }

    /// `watch`'s callback runs once a record of its sink after `seq` is durable: at once if any
    /// record after `seq` is durable already, or the WAL is stopping.
    public func arm(_ watch: DataWatch, after seq: UInt64) {
        let now: Bool = lock.withLock {
            if stopping || stats.durableSeq > seq { return true }
            watch.armed = true
            return false
        }
        if now { watch.callback() }
    }

    /// The pipeline of `sink` left: its watch goes (only if it is still the registered one).
    public func forgetDataWatch(_ watch: DataWatch) {
        lock.withLock {
            if dataWatches[watch.sink] === watch { dataWatches[watch.sink] = nil }
        }
    }

    /// True once `shutdown()` began: callbacks registered now run at once; do not re-register.
    public var isStopping: Bool { lock.withLock { stopping } }

    public var currentStats: WALStats {
        lock.withLock {
            var s = stats
            s.segments = segments.count
            s.bytes = totalBytes
            s.nextSeq = nextSeq
            s.pendingBytes = reservedBytes
            return s
        }
    }

    // MARK: lifecycle

    /// Starts the writer and maintenance threads.
    public func start() {
        writerThread = BlockingThread.start(name: "sinkd-wal-write") { [self] in writerLoop() }
        maintenanceThread = BlockingThread.start(name: "sinkd-wal-maint") { [self] in maintenanceLoop() }
    }

    /// Refuses new appends, writes and syncs everything appended so far (their callbacks run),
    /// seals the active segment, saves progress and stops the threads.
    public func shutdown() {
        let alreadyStopping: Bool = lock.withLock {
            let was = stopping
            stopping = true
            lock.broadcast()
            maintenanceWake.broadcast()
            return was
        }
        if !alreadyStopping {
            if let writerThread { pthread_join(writerThread, nil) }
            if let maintenanceThread { pthread_join(maintenanceThread, nil) }
            if writerThread == nil { drainForShutdown() }
        }
        let waiters: [@Sendable () -> Void] = lock.withLock {
            let watches = dataWatches.values.filter(\.armed)
            for w in watches { w.armed = false }
            defer { spaceWaiters.removeAll(); unwatchedWaiters.removeAll() }
            return spaceWaiters.map(\.callback) + unwatchedWaiters + watches.map(\.callback)
        }
        for w in waiters { w() }
        progressStore.close()
        lock.withLock {
            if lockFD >= 0 {
                close(lockFD)  // another process may open this directory now
                lockFD = -1
            }
        }
    }
}

/// An appending thread's encode buffers, kept between its appends (an event loop appends a
/// batch per read burst). Taken out while in use, so an append that a durable callback makes
/// on the same thread finds empty buffers rather than the ones in use; capacity beyond
/// `maxKeptBytes` is not kept (one huge burst must not pin its size per thread).
final class AppendScratch {
    typealias Item = (body: Range<Int>, crc: CRC32C, key: DedupeKey)
    private var bodies: [UInt8] = []
    private var items: [Item] = []
    static let maxKeptBytes = 1 << 20

    /// nil if the process ran out of thread-specific keys: then every append gets fresh buffers.
    private static let key: pthread_key_t? = {
        var key = pthread_key_t()
        let rc = pthread_key_create(&key) { pointer in
            if let pointer { Unmanaged<AppendScratch>.fromOpaque(pointer).release() }
        }
        return rc == 0 ? key : nil
    }()

    /// This thread's.
    static var current: AppendScratch {
        guard let key else { return AppendScratch() }
        if let pointer = pthread_getspecific(key) {
            return Unmanaged<AppendScratch>.fromOpaque(pointer).takeUnretainedValue()
        }
        let scratch = AppendScratch()
        if pthread_setspecific(key, Unmanaged.passRetained(scratch).toOpaque()) != 0 {
            Unmanaged.passUnretained(scratch).release()
        }
        return scratch
    }

    func takeBodies() -> [UInt8] { takeSpare(&bodies) }

    func takeItems() -> [Item] { takeSpare(&items) }

    /// Gives the buffers back, emptied (the second call of an append's two does nothing).
    func keep(_ bodies: inout [UInt8], _ items: inout [Item]) {
        keepForReuse(&bodies, as: &self.bodies, maxCapacity: Self.maxKeptBytes)
        keepForReuse(&items, as: &self.items, maxCapacity: Self.maxKeptBytes / 64)
    }
}

/// What a new thread runs (passed through pthread_create's argument).
private final class ThreadStart {
    let name: String
    let body: @Sendable () -> Void
    init(name: String, body: @escaping @Sendable () -> Void) {
        self.name = name
        self.body = body
    }
}

/// Threads for blocking work (file I/O, fsync) that must not run on event loops or the
/// cooperative pool.
public enum BlockingThread {
    /// Starts a joinable thread. `name` (at most 15 bytes: the kernel's limit) is what `top -H`,
    /// `ps -L` and perf show; without one a thread inherits its creator's, often a Dispatch
    /// worker's ("...oot.default-qos"), which tells an operator nothing.
    public static func start(name: String? = nil, _ body: @escaping @Sendable () -> Void) -> pthread_t {
        let box = Unmanaged.passRetained(ThreadStart(name: name ?? "", body: body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(
            &thread, nil,
            { arg in
                let start = Unmanaged<ThreadStart>.fromOpaque(arg!).takeRetainedValue()
                if !start.name.isEmpty { BlockingThread.nameThisThread(start.name) }
                start.body()
                return nil
            }, box)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        return thread
    }

    /// pthread_setname_np, which Swift's Glibc module does not export: the same file it writes.
    fileprivate static func nameThisThread(_ name: String) {
        let bytes = Array(name.utf8.prefix(15))
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    /// Starts a thread nobody joins.
    public static func detach(name: String? = nil, _ body: @escaping @Sendable () -> Void) {
        pthread_detach(start(name: name, body))
    }
}

/// A pipeline's watch for durable records of its sink (`WriteAheadLog.watchData`). `armed` is
/// read and written under the WAL's lock only.
public final class DataWatch: @unchecked Sendable {
    let sink: String
    let callback: @Sendable () -> Void
    var armed = false

    init(sink: String, callback: @escaping @Sendable () -> Void) {
        self.sink = sink
        self.callback = callback
    }
}
