/// What segments missing from the WAL took with them (deleted by hand, lost by the file system),
/// found at recovery, I/O-free. Invariant 1 says every acknowledged record stays in a segment
/// until it is finished; a record the progress still counts as unfinished but that no present
/// segment holds is a loss to report, per sink, with its seqs.
///
/// Two sources, both exact about which sink lost what:
/// - the progress's outstanding seqs (handed out, not finished) outside every present segment;
/// - the summary (`<id>.idx`) a missing segment left behind: its per-sink spans name the records
///   no reader had taken yet (seqs above the sink's `readUpTo`). When the span straddles
///   `readUpTo`, how many of its records lie above is not known: the span's count is an upper bound.
/// A missing segment whose summary is gone too shows only through the outstanding seqs.
struct MissingRecords: Equatable {
    struct Loss: Equatable {
        var sink: String
        /// Outstanding seqs no present segment holds (each a lost record).
        var outstanding: [UInt64] = []
        /// Records not handed out yet, from missing segments' summaries.
        var unread: UInt64 = 0
        /// False when `unread` is an upper bound.
        var exact = true
        var firstSeq: UInt64 = .max
        var lastSeq: UInt64 = 0

        var records: UInt64 { UInt64(outstanding.count) + unread }
    }

    /// `present`: the seq ranges of the segments found (first...last of each, records > 0).
    static func find(
        progress: DeliveryProgress, present: [ClosedRange<UInt64>], orphanSummaries: [SegmentSummary]
    ) -> [Loss] {
        let ranges = present.sorted { $0.lowerBound < $1.lowerBound }
        func covered(_ seq: UInt64) -> Bool {
            var low = 0, high = ranges.count
            while low < high {
                let mid = (low + high) / 2
                if ranges[mid].upperBound < seq { low = mid + 1 } else { high = mid }
            }
            return low < ranges.count && ranges[low].contains(seq)
        }
        var losses: [String: Loss] = [:]
        for (name, sink) in progress.sinks {
            let gone = sink.outstanding.filter { !covered($0) }.sorted()
            guard let first = gone.first, let last = gone.last else { continue }
            losses[name] = Loss(sink: name, outstanding: gone, firstSeq: first, lastSeq: last)
        }
        for summary in orphanSummaries {
            for (name, span) in summary.sinks {
                let readUpTo = progress.sink(name).readUpTo
                guard span.lastSeq > readUpTo, span.records > 0 else { continue }
                var loss = losses[name] ?? Loss(sink: name)
                loss.unread += span.records
                loss.exact = loss.exact && span.firstSeq > readUpTo
                loss.firstSeq = min(loss.firstSeq, max(span.firstSeq, readUpTo + 1))
                loss.lastSeq = max(loss.lastSeq, span.lastSeq)
                losses[name] = loss
            }
        }
        return losses.values.sorted { $0.sink < $1.sink }
    }
}
