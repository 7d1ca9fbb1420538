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
// 2. After a failed write or fdatasync, no record of that round is reported durable. The segment
//    is cut back to its last durable size and sealed; writing continues in a new segment file
//    (the page cache of the failed one is not trusted again).
// 3. Sequence numbers grow across restarts and are never reused for anything the progress file
//    mentions: `progress` stores a seq above every seq assigned when it was saved.
// 4. A record leaves the WAL (its segment is deleted) only when every record in the segment is
//    finished (delivered or dead-lettered) according to a progress file already on disk.
//    Deletion order: progress fsynced, then unlink `<id>.wal`, then `<id>.idx`, then fsync the
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
//   progress                     finished records per sink (DeliveryProgress.swift)
//   quarantine/                  segments that could not be read
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

/// What one record's append turned into, decided at once under the lock.
public enum AppendOutcome: Sendable, Equatable {
    /// Will be durable when its batch's ticket completes; `seq` is its sequence number.
    case accepted(seq: UInt64)
    /// The same (sink, id) was accepted within the dedupe window as `seq`; nothing is written.
    case duplicate(seq: UInt64)
    /// The WAL is at `max_size`.
    case full
    case shuttingDown
}

public struct AppendTicket: Sendable, Equatable {
    /// The writer rounds that must succeed for every accepted or duplicate outcome to be durable.
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
    public var fsyncNanosTotal: UInt64 = 0
    public var failedRounds: UInt64 = 0
    public var corruptFramesAtStart: UInt64 = 0
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
    }

    struct Round {
        var number: UInt64
        var frames: [UInt8] = []
        var entries: [Entry] = []
        var callbacks: [(ClosedRange<UInt64>, @Sendable (Result<Void, WALWriteError>) -> Void)] = []

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
    var completedRound: UInt64
    var failedRounds: [UInt64] = []
    let dedupe: DedupeTable
    var progress = DeliveryProgress()
    var progressDirty = false
    var totalBytes = 0
    var spaceWaiters: [@Sendable () -> Void] = []
    var dataWaiters: [@Sendable () -> Void] = []
    /// Sinks that received durable records since `drainNewSinks()` was last called.
    var newSinks = Set<String>()
    var stopping = false
    var stopped = false
    var stats = WALStats()
    public internal(set) var recoveryReport = RecoveryReport()

    // MARK: state of the writer thread only

    var activeFD: CInt = -1
    var activePath = ""
    var activeSize = 0
    var activeDurableSize = 0
    var activeKeys: [(DedupeKey, UInt64)] = []
    var lastSync = ContinuousClock.now
    var dirtySinceSync = false

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
        try openNewActiveSegment()
    }

    deinit {
        if activeFD >= 0 { close(activeFD) }
    }

    var directory: String { options.directory }
    func path(_ name: String) -> String { directory + "/" + name }

    // MARK: appending

    /// Decides each record's outcome now; accepted records become durable when the ticket
    /// completes (see `whenDurable`). With `when_full: block`, stops at the first record that does
    /// not fit: its outcome is `.full` and the records after it are left for the caller to retry
    /// once `whenSpaceAvailable` fires.
    /// `checkDuplicates: false` appends even records whose (sink, id) was seen recently (a replay
    /// of dead letters); they are still remembered for later duplicates.
    public func append(_ records: [EventRecord], nowMillis: UInt64, checkDuplicates: Bool = true) -> (outcomes: [AppendOutcome], ticket: AppendTicket) {
        // Encoding and the body checksum happen outside the lock.
        var bodies: [(body: [UInt8], crc: CRC32C, key: DedupeKey)] = []
        bodies.reserveCapacity(records.count)
        for var r in records {
            r.acceptedAtMillis = nowMillis
            var body: [UInt8] = []
            body.reserveCapacity(RecordCodec.encodedSize(r))
            RecordCodec.encode(r, into: &body)
            var crc = CRC32C()
            crc.update(body)
            bodies.append((body, crc, DedupeKey(sink: r.sink, id: r.id)))
        }
        return lock.withLock {
            var outcomes: [AppendOutcome] = []
            outcomes.reserveCapacity(records.count)
            var lowRound = pending.number
            var highRound = completedRound
            for (i, item) in bodies.enumerated() {
                if stopping {
                    outcomes.append(.shuttingDown)
                    continue
                }
                if checkDuplicates, let seq = dedupe.lookUp(item.key, now: nowMillis) {
                    outcomes.append(.duplicate(seq: seq))
                    let round = roundHolding(seq)
                    lowRound = min(lowRound, round)
                    highRound = max(highRound, round)
                    stats.duplicateRecords += 1
                    continue
                }
                let frameLength = SegmentFormat.frameHeaderSize + item.body.count
                if totalBytes + frameLength > options.maxSize {
                    outcomes.append(.full)
                    if options.whenFull == .block { break }
                    continue
                }
                let seq = nextSeq
                nextSeq += 1
                let offset = pending.frames.count
                SegmentFormat.appendFrame(seq: seq, body: item.body, bodyCRC: item.crc, to: &pending.frames)
                pending.entries.append(Round.Entry(seq: seq, frameOffset: offset, frameLength: frameLength, sink: records[i].sink, key: item.key, acceptedAtMillis: nowMillis))
                totalBytes += frameLength
                dedupe.insert(item.key, seq: seq, now: nowMillis)
                outcomes.append(.accepted(seq: seq))
                highRound = pending.number
                stats.appendedRecords += 1
            }
            if !pending.entries.isEmpty { lock.broadcast() }
            // Only the rounds this batch's outcomes depend on: a batch of duplicates of durable
            // records, or of refusals, completes at once.
            return (outcomes, AppendTicket(rounds: min(lowRound, highRound)...highRound))
        }
    }

    /// The round in which `seq` is (or was) written; rounds at or below `completedRound` are done.
    private func roundHolding(_ seq: UInt64) -> UInt64 {
        if let writing, let first = writing.entries.first?.seq, let last = writing.entries.last?.seq, seq >= first, seq <= last {
            return writing.number
        }
        if let first = pending.entries.first?.seq, seq >= first { return pending.number }
        return completedRound
    }

    /// Calls `callback` (on the writer thread, or at once) when every round of `ticket` is on disk,
    /// or with the error of the first that failed.
    public func whenDurable(_ ticket: AppendTicket, _ callback: @escaping @Sendable (Result<Void, WALWriteError>) -> Void) {
        let immediate: Result<Void, WALWriteError>? = lock.withLock {
            if ticket.rounds.upperBound <= completedRound {
                return failedRounds.contains(where: { ticket.rounds.contains($0) }) ? .failure(lastFailure ?? WALWriteError(underlying: FileError(operation: "write", path: directory, errno: EIO))) : .success(())
            }
            if ticket.rounds.upperBound == pending.number {
                pending.callbacks.append((ticket.rounds, callback))
                lock.broadcast()
            } else {
                writing!.callbacks.append((ticket.rounds, callback))
            }
            return nil
        }
        if let immediate { callback(immediate) }
    }

    var lastFailure: WALWriteError?

    /// Returns once everything appended before the call is on disk (or failed).
    public func flush() async {
        let ticket = lock.withLock { AppendTicket(rounds: pending.number...pending.number) }
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            whenDurable(ticket) { _ in done.resume() }
        }
    }

    /// Calls `callback` once the WAL has room again (segments were deleted) or is stopping.
    public func whenSpaceAvailable(_ callback: @escaping @Sendable () -> Void) {
        let now: Bool = lock.withLock {
            if stopping || totalBytes < options.maxSize - options.segmentSize / 16 { return true }
            spaceWaiters.append(callback)
            return false
        }
        if now { callback() }
    }

    /// Calls `callback` once after new records become readable.
    public func whenNewData(after seq: UInt64, _ callback: @escaping @Sendable () -> Void) {
        let now: Bool = lock.withLock {
            if stopping || stats.durableSeq > seq { return true }
            dataWaiters.append(callback)
            return false
        }
        if now { callback() }
    }

    /// True once `shutdown()` began: callbacks registered now run at once; do not re-register.
    public var isStopping: Bool { lock.withLock { stopping } }

    public var currentStats: WALStats {
        lock.withLock {
            var s = stats
            s.segments = segments.count
            s.bytes = totalBytes
            s.nextSeq = nextSeq
            return s
        }
    }

    // MARK: lifecycle

    /// Starts the writer and maintenance threads.
    public func start() {
        writerThread = BlockingThread.start { [self] in writerLoop() }
        maintenanceThread = BlockingThread.start { [self] in maintenanceLoop() }
    }

    /// Refuses new appends, writes and syncs everything appended so far (their callbacks run),
    /// seals the active segment, saves progress and stops the threads.
    public func shutdown() {
        let alreadyStopping: Bool = lock.withLock {
            let was = stopping
            stopping = true
            lock.broadcast()
            return was
        }
        if !alreadyStopping {
            if let writerThread { pthread_join(writerThread, nil) }
            if let maintenanceThread { pthread_join(maintenanceThread, nil) }
            if writerThread == nil { drainForShutdown() }
        }
        let waiters: [@Sendable () -> Void] = lock.withLock {
            defer { spaceWaiters.removeAll(); dataWaiters.removeAll() }
            return spaceWaiters + dataWaiters
        }
        for w in waiters { w() }
    }
}

/// Threads for blocking work (file I/O, fsync) that must not run on event loops or the
/// cooperative pool.
public enum BlockingThread {
    /// Starts a joinable thread.
    public static func start(_ body: @escaping @Sendable () -> Void) -> pthread_t {
        final class Box {
            let body: @Sendable () -> Void
            init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { arg in
            let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        return thread
    }

    /// Starts a thread nobody joins.
    public static func detach(_ body: @escaping @Sendable () -> Void) {
        pthread_detach(start(body))
    }
}
