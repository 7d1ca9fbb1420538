import Metrics

/// The WAL's own series (docs/METRICS.md); the rest of its figures are read from `WALStats`.
enum WALMetrics {
    static let fsync = Metrics.Timer(label: "sinkd_wal_fsync_seconds")
    static let writeFailures = Counter(label: "sinkd_wal_write_failures_total")
    static let rewritten = Counter(label: "sinkd_wal_rewritten_records_total")
    static let recordsAtRisk = Counter(label: "sinkd_wal_records_at_risk_total")
    static let corruptFrames = Counter(label: "sinkd_wal_corrupt_frames_total")
    static let lostRecords = Counter(label: "sinkd_wal_lost_records_total")

    /// Makes every counter now (a static is made at first use), so that each is exported from
    /// the start, at 0: an alert on "lost records increased" needs the series before the loss.
    static func exportAll() {
        for counter in [writeFailures, rewritten, recordsAtRisk, corruptFrames, lostRecords] {
            counter.increment(by: 0)
        }
    }
}

extension Result {
    var isFailure: Bool {
        if case .failure = self { return true }
        return false
    }
}

extension Duration {
    var nanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
    }
}
