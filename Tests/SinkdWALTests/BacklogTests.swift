import SinkdCore
import Testing
@testable import SinkdWAL

/// The backlog figures behind `sinkd status`, sinkd_backlog_* and the oldest-record alert.
@Suite struct BacklogTests {
    static let hour: UInt64 = 3_600_000
    static let t0: UInt64 = 1_800_000_000_000

    /// At a slow pace a segment lives for hours; one record in flight must not read as the
    /// segment's age, nor count the segment's every record (the figures were per segment).
    @Test func oneRecordInFlightInAnOldSegmentIsOneYoungRecord() throws {
        let t = try TestWAL()
        try t.append((0..<500).map { record("old-\($0)") }, now: Self.t0)
        let reader = t.wal.reader(for: "file:a")
        var all: [SequencedRecord] = []
        while case let batch = try reader.next(maxRecords: 100), !batch.isEmpty { all += batch }
        t.wal.markFinished(sink: "file:a", seqs: all.map(\.seq))
        #expect(t.wal.backlog()["file:a"] == nil, "caught up: no backlog")

        // An hour later one record arrives, in the same (active) segment: not read yet.
        try t.append([record("new")], now: Self.t0 + Self.hour)
        var b = try #require(t.wal.backlog()["file:a"])
        #expect(b.records == 1)
        #expect(b.oldestMillis == Self.t0 + Self.hour, "its own acceptance time, not the segment's first record's")

        // Handed out, in flight: still one record, still its own age.
        let inFlight = try reader.next(maxRecords: 100)
        #expect(inFlight.map(\.record.id) == ["new"])
        b = try #require(t.wal.backlog()["file:a"])
        #expect(b.records == 1)
        #expect(b.bytes == UInt64(inFlight[0].record.payload.count))
        #expect(b.oldestMillis == Self.t0 + Self.hour)

        t.wal.markFinished(sink: "file:a", seqs: inFlight.map(\.seq))
        #expect(t.wal.backlog()["file:a"] == nil)
    }

    /// A sink that is down holds its window (outstanding) while records keep arriving: the oldest
    /// is the first held record; the count is everything unfinished.
    @Test func aDownSinkAgesFromItsFirstHeldRecord() throws {
        let t = try TestWAL()
        for i in 0..<10 { try t.append([record("r\(i)")], now: Self.t0 + UInt64(i) * 1000) }
        let reader = t.wal.reader(for: "file:a")
        let window = try reader.next(maxRecords: 4)  // handed out, never finished
        #expect(window.count == 4)
        let b = try #require(t.wal.backlog()["file:a"])
        #expect(b.records == 10)
        #expect(b.oldestMillis == Self.t0)
        // The first two finish (delivered), the rest of the window still held.
        t.wal.markFinished(sink: "file:a", seqs: window.prefix(2).map(\.seq))
        let after = try #require(t.wal.backlog()["file:a"])
        #expect(after.records == 8)
        #expect(after.oldestMillis == Self.t0 + 2000)
    }

    /// After a restart what the previous run handed out is bounded by its segment until read.
    @Test func afterARestartTheHeldRecordsAreBoundedThenExact() throws {
        let t = try TestWAL()
        for i in 0..<6 { try t.append([record("r\(i)")], now: Self.t0 + UInt64(i) * 1000) }
        let first = try t.wal.reader(for: "file:a").next(maxRecords: 3)
        t.wal.markFinished(sink: "file:a", seqs: [first[0].seq])  // r1, r2 held across the restart
        try t.wal.checkpoint()
        try t.restart()
        var b = try #require(t.wal.backlog()["file:a"])
        #expect(b.records == 5)
        #expect(b.oldestMillis == Self.t0, "not known yet: the segment's oldest record bounds it")
        let replayed = try t.wal.reader(for: "file:a").next(maxRecords: 100)
        #expect(replayed.map(\.record.id) == ["r1", "r2", "r3", "r4", "r5"])
        b = try #require(t.wal.backlog()["file:a"])
        #expect(b.records == 5)
        #expect(b.oldestMillis == Self.t0 + 1000, "read again: exact")
    }

    /// Handing records out finishes none of them: no checkpoint is due. (A sink that is down
    /// keeps reading into its window; a checkpoint per batch, each encoding every outstanding seq,
    /// took most of sinkd's CPU during the soak's Kafka outages.)
    /// Guards WAL invariant 4 (WriteAheadLog.swift).
    @Test func handingOutAloneWritesNoCheckpoint() throws {
        let t = try TestWAL()
        try t.append((0..<100).map { record("r\($0)") })
        let reader = t.wal.reader(for: "file:a")
        let first = try reader.next(maxRecords: 10)
        t.wal.markFinished(sink: "file:a", seqs: first.map(\.seq))
        try t.wal.checkpoint()
        func slots() -> [[UInt8]?] {
            ProgressStore.slotNames.map { try? FileIO.readFile(t.directory + "/" + $0, noFollow: true) }
        }
        let saved = slots()
        #expect(saved.contains { $0 != nil })
        for _ in 0..<5 {
            #expect(try reader.next(maxRecords: 10).count == 10)
            try t.wal.checkpoint()
        }
        let unchanged = slots() == saved  // (compared outside #expect: its failure would print both files)
        #expect(unchanged, "no progress file rewritten for records only handed out")
        // After a restart the handed-out records are simply unread again: nothing is lost.
        try t.restart()
        #expect(try readAll(t.wal, sink: "file:a").map(\.record.id) == (10..<100).map { "r\($0)" })
    }

    // MARK: plain values

    static func summary(
        _ spans: [(sink: String, first: UInt64, last: UInt64, records: UInt64)], minMillis: UInt64
    ) -> SegmentSummary {
        var s = SegmentSummary()
        s.minAcceptedMillis = minMillis
        s.firstSeq = spans.map(\.first).min() ?? 0
        s.lastSeq = spans.map(\.last).max() ?? 0
        for span in spans {
            s.sinks[span.sink] = SegmentSummary.SinkSpan(
                firstSeq: span.first, lastSeq: span.last, records: span.records, bodyBytes: span.records * 100)
        }
        return s
    }

    /// Two sinks interleaved in one segment, one of them read half way: its unread part is the
    /// share of its span after readUpTo; the other sink's unread records count whole.
    @Test func theSegmentBeingReadCountsItsUnreadShare() {
        let segments = [Self.summary([("a", 1, 1999, 1000), ("b", 2, 2000, 1000)], minMillis: Self.t0)]
        var progress = DeliveryProgress()
        progress.handedOut(sink: "a", seqs: stride(from: 1, through: 999, by: 2))
        progress.finished(sink: "a", seqs: stride(from: 1, through: 999, by: 2))
        let tracker = BacklogTracker(summaries: segments, progress: progress)
        let backlog = tracker.backlog(summaries: segments, progress: progress)
        #expect(backlog["a"]?.records == 500)
        #expect(backlog["a"]?.bytes == 50_000)
        #expect(backlog["b"]?.records == 1000)
        #expect(backlog["a"]?.oldestMillis == Self.t0, "recovered: bounded by the segment")
    }

    @Test func appendsWhileCaughtUpDateTheBacklogAndHandingOutMovesTheBound() {
        var tracker = BacklogTracker()
        var progress = DeliveryProgress()
        tracker.appended(sink: "a", seq: 1, acceptedAtMillis: 100)
        tracker.appended(sink: "a", seq: 2, acceptedAtMillis: 200)
        tracker.appended(sink: "a", seq: 3, acceptedAtMillis: 300)
        let segments = [Self.summary([("a", 1, 3, 3)], minMillis: 100)]
        #expect(
            tracker.backlog(summaries: segments, progress: progress)["a"]
                == .init(records: 3, bytes: 300, oldestMillis: 100))
        progress.handedOut(sink: "a", seqs: [1])
        tracker.handedOut(sink: "a", records: [(seq: 1, held: .init(bytes: 7, acceptedAtMillis: 100))], readUpTo: 1)
        progress.finished(sink: "a", seqs: [1])
        tracker.finished(sink: "a", seqs: [1])
        // Records 2 and 3 unread: the next one was accepted at or after record 1 (a bound).
        let b = tracker.backlog(summaries: segments, progress: progress)["a"]
        #expect(b?.oldestMillis == 100)
        #expect(b?.records == 2)
        progress.handedOut(sink: "a", seqs: [2, 3])
        tracker.handedOut(
            sink: "a",
            records: [
                (seq: 2, held: .init(bytes: 7, acceptedAtMillis: 200)),
                (seq: 3, held: .init(bytes: 7, acceptedAtMillis: 300)),
            ], readUpTo: 3)
        #expect(
            tracker.backlog(summaries: segments, progress: progress)["a"]
                == .init(records: 2, bytes: 14, oldestMillis: 200))
        progress.finished(sink: "a", seqs: [2, 3])
        tracker.finished(sink: "a", seqs: [2, 3])
        #expect(tracker.backlog(summaries: segments, progress: progress)["a"] == nil)
        // Caught up: the next append dates the backlog by itself.
        tracker.appended(sink: "a", seq: 9, acceptedAtMillis: 5_000)
        let later = [Self.summary([("a", 1, 9, 4)], minMillis: 100)]
        #expect(tracker.backlog(summaries: later, progress: progress)["a"]?.oldestMillis == 5_000)
        tracker.prune(keeping: [])
        #expect(tracker.sinks.isEmpty)
    }
}
