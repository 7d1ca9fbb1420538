#if canImport(Glibc)
import Glibc
#endif
import SinkdCore

/// Reads one sink's unfinished records in seq order, whatever the backlog, with memory bounded
/// by the batch asked for: the delivery engine's view of the WAL.
///
/// A new reader first replays the records the progress file lists as outstanding (handed out
/// but not finished when sinkd stopped), then continues after `readUpTo`. Each record returned is
/// recorded as handed out; the engine reports it finished with `markFinished`. Reading does
/// blocking preads: call it from a thread that may block.
public final class SinkReader: @unchecked Sendable {
    public let sink: String
    private let wal: WriteAheadLog
    private let sinkBytes: [UInt8]
    /// Everything at or below this seq was looked at.
    public private(set) var position: UInt64
    /// Every record of this sink at or below this seq was returned: wait for data after it.
    public private(set) var caughtUpTo: UInt64
    private var replay: Set<UInt64>
    private var readUpTo: UInt64
    private var openSegment: (id: UInt64, fd: CInt, offset: Int)?
    /// The last `next` read to the end of what was durable (it was not cut short by its record
    /// or byte limit): another call now would return nothing, so wait for new data instead.
    public private(set) var reachedEnd = false

    init(wal: WriteAheadLog, sink: String, progress: DeliveryProgress.Sink) {
        self.wal = wal
        self.sink = sink
        self.sinkBytes = Array(sink.utf8)
        self.replay = progress.outstanding
        self.readUpTo = progress.readUpTo
        self.position = progress.watermark
        self.caughtUpTo = progress.watermark
    }

    deinit {
        if let openSegment { close(openSegment.fd) }
    }

    /// Up to `maxRecords` records (and about `maxBytes` of payload) after those returned before.
    /// Empty when nothing unfinished is readable now: wait with a data watch (`WriteAheadLog.watchData`, `arm`).
    public func next(maxRecords: Int, maxBytes: Int = 4 << 20) throws -> [SequencedRecord] {
        let (view, visibleSeq) = wal.readerView(sink: sink, after: position)
        var out: [SequencedRecord] = []
        var bytes = 0
        for segment in view {
            guard out.count < maxRecords, bytes < maxBytes else { break }
            if openSegment?.id != segment.id {
                if let openSegment { close(openSegment.fd) }
                openSegment = nil
                // Deleted since the view was taken: nothing unfinished of ours was in it.
                guard let fd = try openIfPresent(wal.path(SegmentFormat.fileName(id: segment.id))) else { continue }
                openSegment = (segment.id, fd, SegmentFormat.headerSize)
            }
            var scanner = SegmentScanner(
                source: FileSegment(fd: openSegment!.fd, size: segment.visibleSize), from: openSegment!.offset,
                maxBody: wal.options.segmentSize)
            scan: while out.count < maxRecords, bytes < maxBytes {
                switch try scanner.next() {
                case .record(let seq, let frameOffset, let bodyOffset, let bodyLength):
                    guard seq > position else { continue }
                    let wanted = seq > readUpTo || replay.contains(seq)
                    if wanted {
                        // A frame whose checksum holds but whose body does not decode is damage
                        // too (never a reason to throw on every call and pin the sink).
                        let decoded: Result<EventRecord?, RecordCodec.DecodeError> = scanner.withBody(
                            bodyOffset: bodyOffset, length: bodyLength
                        ) { body in
                            do throws(RecordCodec.DecodeError) {
                                let key = try RecordCodec.peekKey(body)
                                guard key.sink.elementsEqual(sinkBytes) else { return .success(nil) }
                                return .success(try RecordCodec.decode(body))
                            } catch {
                                return .failure(error)
                            }
                        }
                        switch decoded {
                        case .success(let record?):
                            out.append(SequencedRecord(seq: seq, record: record))
                            bytes += record.payload.count
                            replay.remove(seq)
                        case .success(nil):
                            break
                        case .failure(let error):
                            wal.reportCorruption(
                                segment: segment.id, fd: openSegment!.fd, offset: frameOffset,
                                length: bodyOffset + bodyLength - frameOffset,
                                afterSeq: position, beforeSeq: seq + 1, sink: sink,
                                reason: "a frame whose body does not decode (\(error))")
                        }
                    }
                    position = seq
                case .corrupt(let offset, let length), .tornTail(let offset, let length):
                    // Damage found while running (recovery counted what was there at start; this
                    // is bit rot since, or a segment whose summary hid it): counted, logged with
                    // its place, and its bytes kept in quarantine/, never passed over silently.
                    wal.reportCorruption(
                        segment: segment.id, fd: openSegment!.fd, offset: offset, length: length,
                        afterSeq: position, beforeSeq: nil, sink: sink, reason: "bytes that are not a valid frame")
                    continue
                case .end:
                    break scan
                }
            }
            openSegment!.offset = scanner.offset
            if scanner.offset < segment.visibleSize || !segment.sealed { break }
        }
        reachedEnd = out.count < maxRecords && bytes < maxBytes
        if reachedEnd {
            caughtUpTo = max(caughtUpTo, visibleSeq)  // read to the end of what was visible
            // Records handed out before a restart that a full pass did not find are damaged
            // beyond reading: reported and finished, so their seqs do not stay outstanding (and
            // their segments undeletable) forever.
            let lost = replay.filter { $0 <= position }
            if !lost.isEmpty {
                replay.subtract(lost)
                wal.reportLost(sink: sink, seqs: lost.sorted())
            }
        }
        if !out.isEmpty {
            readUpTo = max(readUpTo, out.last!.seq)
            wal.handedOut(sink: sink, records: out)
        }
        return out
    }
}

private func openIfPresent(_ path: String) throws(FileError) -> CInt? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd >= 0 { return fd }
    if errno == ENOENT { return nil }
    throw FileError(operation: "open", path: path, errno: errno)
}

extension WriteAheadLog {
    struct ReaderSegment {
        var id: UInt64
        var visibleSize: Int
        var sealed: Bool
    }

    public func reader(for sink: String) -> SinkReader {
        SinkReader(wal: self, sink: sink, progress: progress(of: sink))
    }

    /// The segments that may hold records of `sink` after `seq`, with their readable sizes, and
    /// the last seq readable at that moment.
    func readerView(sink: String, after seq: UInt64) -> ([ReaderSegment], UInt64) {
        lock.withLock {
            let view = segments.compactMap { s -> ReaderSegment? in
                guard let span = s.summary.sinks[sink], span.lastSeq > seq else { return nil }
                return ReaderSegment(id: s.id, visibleSize: s.visibleSize, sealed: s.sealed)
            }
            return (view, stats.durableSeq)
        }
    }

    /// Whether `sink` has records after `seq` in the WAL (readable or about to be).
    public func hasRecords(sink: String, after seq: UInt64) -> Bool {
        lock.withLock { segments.contains { ($0.summary.sinks[sink]?.lastSeq ?? 0) > seq } }
    }

    /// The sinks that received records since the last `drainNewSinks()`, without clearing them.
    public func peekNewSinks() -> Set<String> {
        lock.withLock { newSinks }
    }

    /// The sinks that received records since the last call.
    public func drainNewSinks() -> Set<String> {
        lock.withLock {
            defer { newSinks.removeAll() }
            return newSinks
        }
    }

    /// Handing out changes no record's finished state (readUpTo grows by exactly the seqs that
    /// become outstanding), so it does not make the progress file dirty: a sink that is down keeps
    /// reading into its window without a checkpoint per batch (the soak saw such checkpoints, each
    /// encoding every outstanding seq, take most of sinkd's CPU during a Kafka outage). The next
    /// checkpoint after something finishes saves these seqs with it.
    func handedOut(sink: String, records: [SequencedRecord]) {
        lock.withLock {
            progress.handedOut(sink: sink, seqs: records.lazy.map(\.seq))
            backlogTracker.handedOut(
                sink: sink,
                records: records.lazy.map {
                    (
                        seq: $0.seq,
                        held: BacklogTracker.Held(
                            bytes: UInt64($0.record.payload.count), acceptedAtMillis: $0.record.acceptedAtMillis)
                    )
                }, readUpTo: progress.sink(sink).readUpTo)
        }
    }

    /// Per sink: records and bytes not yet finished, and the acceptance time of the oldest of them
    /// (how exact: BacklogTracker). Computed from a copy taken under the lock (summaries, progress
    /// and tracker are values: the copy costs a few reference counts), so a scrape or `status` with
    /// many sinks and segments never holds the lock that appends and deliveries need.
    public func backlog() -> [String: BacklogTracker.Backlog] {
        let (summaries, progress, tracker) = lock.withLock { (segments.map(\.summary), self.progress, backlogTracker) }
        return tracker.backlog(summaries: summaries, progress: progress)
    }

    /// The sinks with records in the WAL, and how many records and bytes each has there
    /// (finished ones included until their segment is deleted).
    public func sinksInLog() -> [String: (records: UInt64, bytes: UInt64)] {
        lock.withLock {
            var out: [String: (records: UInt64, bytes: UInt64)] = [:]
            for s in segments {
                for (sink, span) in s.summary.sinks {
                    let current = out[sink] ?? (0, 0)
                    out[sink] = (current.records + span.records, current.bytes + span.bodyBytes)
                }
            }
            return out
        }
    }
}
