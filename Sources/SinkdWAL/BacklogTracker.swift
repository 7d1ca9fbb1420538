/// Per sink, how many records wait and since when: what `sinkd status`, the backlog gauges and the
/// "oldest undelivered record" alert read. I/O-free; the WAL updates it under its lock.
///
/// Segment summaries alone say only which segments still hold an unfinished record, so a figure
/// built from them counts a whole segment while one record of it is in flight, and dates the
/// backlog from the segment's first record: at a slow pace a segment lives for hours and a record
/// in flight for a millisecond would read as hours old. Here the age is exact in operation:
/// - records handed out and not finished (in flight or waiting for a retry) are known one by one
///   (bytes, acceptance time): memory bounded by the pipeline's window;
/// - for the records not read yet, the acceptance time of the first of them is noted as it is
///   appended when the sink was caught up, or bounded by the last record handed out (the next one
///   was accepted after it).
/// What is not known after a restart (records handed out by the previous run, the unread part of
/// a sink that was behind) is bounded by its segment's oldest record until the pipeline reads it.
/// Counts are exact except inside the one segment the pipeline is reading, where the unread part
/// is estimated from the seqs (the sink's records spread evenly over its span).
public struct BacklogTracker: Sendable, Equatable {
    public struct Held: Sendable, Equatable {
        public var bytes: UInt64
        public var acceptedAtMillis: UInt64
    }

    public enum FirstUnread: Sendable, Equatable {
        /// Nothing after `readUpTo`.
        case caughtUp
        /// The first record after `readUpTo` was accepted at or after this time.
        case since(UInt64)
        /// Records after `readUpTo` whose time is not known (recovered): bounded by their segment.
        case unknown
    }

    public struct Sink: Sendable, Equatable {
        public var lastAppended: UInt64 = 0
        public var firstUnread: FirstUnread = .caughtUp
        public var held: [UInt64: Held] = [:]
    }

    public struct Backlog: Sendable, Equatable {
        public var records: UInt64
        public var bytes: UInt64
        public var oldestMillis: UInt64?
    }

    public private(set) var sinks: [String: Sink] = [:]

    public init() {}

    /// After recovery: every sink with records in the WAL, and whether it was behind.
    public init(summaries: [SegmentSummary], progress: DeliveryProgress) {
        for summary in summaries {
            for (name, span) in summary.sinks {
                sinks[name, default: Sink()].lastAppended = max(sinks[name]?.lastAppended ?? 0, span.lastSeq)
            }
        }
        for (name, sink) in sinks where sink.lastAppended > progress.sink(name).readUpTo {
            sinks[name]!.firstUnread = .unknown
        }
    }

    /// A record of `sink` was written to the active segment.
    public mutating func appended(sink name: String, seq: UInt64, acceptedAtMillis: UInt64) {
        Self.update(&sinks[name, default: Sink()]) { s in
            if s.firstUnread == .caughtUp { s.firstUnread = .since(acceptedAtMillis) }
            s.lastAppended = max(s.lastAppended, seq)
        }
    }

    /// The pipeline took these records (in seq order); `readUpTo` is the sink's progress after it.
    public mutating func handedOut(
        sink name: String, records: some Sequence<(seq: UInt64, held: Held)>, readUpTo: UInt64
    ) {
        Self.update(&sinks[name, default: Sink()]) { s in
            var last: UInt64?
            for r in records {
                s.held[r.seq] = r.held
                last = r.held.acceptedAtMillis
            }
            if readUpTo >= s.lastAppended {
                s.firstUnread = .caughtUp
            } else if let last {
                s.firstUnread = .since(last)
            }
        }
    }

    public mutating func finished(sink name: String, seqs: some Sequence<UInt64>) {
        guard sinks[name] != nil else { return }
        Self.update(&sinks[name, default: Sink()]) { s in
            for seq in seqs { s.held.removeValue(forKey: seq) }
        }
    }

    /// Forgets sinks with nothing held and no records left in the WAL.
    public mutating func prune(keeping live: Set<String>) {
        sinks = sinks.filter { !$0.value.held.isEmpty || live.contains($0.key) }
    }

    private static func update(_ sink: inout Sink, _ body: (inout Sink) -> Void) {
        body(&sink)
    }

    /// Per sink with unfinished records: how many, their bytes, and the oldest acceptance time.
    /// `summaries` in segment order (ascending seqs).
    public func backlog(summaries: [SegmentSummary], progress: DeliveryProgress) -> [String: Backlog] {
        var names = Set(sinks.keys)
        for summary in summaries { names.formUnion(summary.sinks.keys) }
        var out: [String: Backlog] = [:]
        for name in names {
            let p = progress.sink(name)
            let tracked = sinks[name] ?? Sink()
            var records: UInt64 = 0
            var bytes: UInt64 = 0
            var oldest = UInt64.max
            // Handed out, not finished: known one by one, or bounded by their segment.
            for seq in p.outstanding {
                records += 1
                if let held = tracked.held[seq] {
                    bytes += held.bytes
                    oldest = min(oldest, held.acceptedAtMillis)
                } else if let summary = summaries.first(where: { ($0.sinks[name]?.lastSeq ?? 0) >= seq }),
                    let span = summary.sinks[name]
                {
                    bytes += span.bodyBytes / max(span.records, 1)
                    oldest = min(oldest, summary.minAcceptedMillis)
                }
            }
            // Not read yet: whole segments after readUpTo, a share of the one it falls in.
            var firstUnreadSegment: SegmentSummary?
            for summary in summaries {
                guard let span = summary.sinks[name], span.lastSeq > p.readUpTo else { continue }
                if firstUnreadSegment == nil { firstUnreadSegment = summary }
                if span.firstSeq > p.readUpTo {
                    records += span.records
                    bytes += span.bodyBytes
                } else {
                    let share = Double(span.lastSeq - p.readUpTo) / Double(span.lastSeq - span.firstSeq + 1)
                    let part = min(span.records, max(1, UInt64((Double(span.records) * share).rounded())))
                    records += part
                    bytes += span.bodyBytes / max(span.records, 1) * part
                }
            }
            if let firstUnreadSegment {
                switch tracked.firstUnread {
                case .since(let millis): oldest = min(oldest, millis)
                case .caughtUp, .unknown: oldest = min(oldest, firstUnreadSegment.minAcceptedMillis)
                }
            }
            guard records > 0 else { continue }
            out[name] = Backlog(records: records, bytes: bytes, oldestMillis: oldest == .max ? nil : oldest)
        }
        return out
    }
}
