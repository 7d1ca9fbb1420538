import Foundation
import Testing
import SinkdTestSupport
import SinkdCore
@testable import SinkdWAL

/// The WAL on real files in temporary directories.
@Suite(.serialized, .blockingThreads) struct WriteAheadLogTests {
    /// Guards WAL invariant 1 (WriteAheadLog.swift).
    @Test func acceptedRecordsSurviveARestartInOrder() throws {
        let t = try TestWAL()
        let outcomes = try t.append((1...100).map { record("t-\($0)", sink: $0 % 2 == 0 ? "file:even" : "file:odd") })
        #expect(outcomes == (1...100).map { .accepted(seq: UInt64($0)) })
        try t.restart()
        let even = try readAll(t.wal, sink: "file:even")
        #expect(even.map(\.record.id) == stride(from: 2, through: 100, by: 2).map { "t-\($0)" })
        #expect(even.map(\.seq) == stride(from: 2, through: 100, by: 2).map(UInt64.init))
        #expect(even[0].record.payload == Array(#"{"n":1}"#.utf8))
        #expect(even[0].record.acceptedAtMillis > 0)
        #expect(try readAll(t.wal, sink: "file:odd").count == 50)
        #expect(try readAll(t.wal, sink: "file:none").isEmpty)
    }

    /// The WAL's threads carry names an operator can read in `top -H`, `ps -L` and perf (a
    /// thread inherits its creator's otherwise: a Dispatch worker's "...oot.default-qos").
    @Test func theWALsThreadsAreNamed() throws {
        let t = try TestWAL()
        _ = try t.append([record("named", sink: "file:named")])
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        let names = Set(
            tasks.compactMap { tid in
                (try? String(contentsOfFile: "/proc/self/task/\(tid)/comm", encoding: .utf8))?
                    .trimmingCharacters(in: .whitespacesAndNewlines)
            })
        #expect(names.contains("sinkd-wal-write"), "thread names: \(names.sorted())")
        #expect(names.contains("sinkd-wal-maint"), "thread names: \(names.sorted())")
    }

    /// At Conductor's pace every record is a round of its own, and the writer's condition is
    /// broadcast at every append: the maintenance thread woke with it and saved progress (two
    /// writes, two fdatasyncs) once per delivered record instead of once per checkpoint interval.
    /// Guards WAL invariant 4 (WriteAheadLog.swift).
    @Test func progressIsSavedOncePerIntervalNotOncePerRecord() throws {
        let t = try TestWAL()
        t.options.checkpointInterval = .milliseconds(250)
        try t.restart()
        let reader = t.wal.reader(for: "file:a")
        let saves0 = t.wal.currentStats.progressSaves
        let started = ContinuousClock.now
        for i in 0..<60 {
            try t.append([record("paced-\(i)")])
            let batch = try reader.next(maxRecords: 10)
            t.wal.markFinished(sink: "file:a", seqs: batch.map(\.seq))
            usleep(2_000)
        }
        let elapsed = ContinuousClock.now - started
        let saves = t.wal.currentStats.progressSaves - saves0
        let intervals = UInt64(elapsed / .milliseconds(250)) + 2
        #expect(
            saves <= intervals, "\(saves) progress saves for 60 records in \(elapsed): at most one per 250 ms interval")
    }

    /// A read that went to the end of what is durable says so, so that the pipeline waits for
    /// new data instead of reading again (an empty read per record was a thread-pool round trip
    /// at Conductor's pace); one cut short by its limits does not.
    @Test func aReaderSaysWhenItReachedTheEnd() throws {
        let t = try TestWAL()
        try t.append((0..<5).map { record("r\($0)") })
        let reader = t.wal.reader(for: "file:a")
        #expect(try reader.next(maxRecords: 3).count == 3)
        #expect(reader.reachedEnd == false, "cut short by maxRecords: more may be there")
        #expect(try reader.next(maxRecords: 10).count == 2)
        #expect(reader.reachedEnd, "read to the end")
        try t.append([record("r5")])
        #expect(try reader.next(maxRecords: 10, maxBytes: 1).count == 1)
        #expect(reader.reachedEnd == false, "cut short by maxBytes")
        #expect(try reader.next(maxRecords: 10).isEmpty)
        #expect(reader.reachedEnd)
    }

    /// A round wakes the pipelines of the sinks it holds records of; not every idle pipeline
    /// (each woken one read, found nothing and registered again: at Conductor's pace with 50 live
    /// sinks, 50 wake-ups per record), and not the dispatcher's watch unless a sink in it has no
    /// pipeline watching (it was woken by every round: a callback and three heap calls per record).
    @Test func newDataWakesOnlyTheSinksThatGotRecords() throws {
        let t = try TestWAL()
        try t.append([record("first", sink: "file:a")])
        let seen = t.wal.currentStats.durableSeq
        let woken = WokenSinks()
        for sink in ["file:a", "file:b", "file:c"] {
            let watch = t.wal.watchData(sink: sink) { woken.add(sink) }
            t.wal.arm(watch, after: seen)
        }
        // The sink of the rounds that mark "after the waiters": watched, never armed.
        _ = t.wal.watchData(sink: "file:z") { woken.add("file:z") }
        t.wal.whenUnwatchedData(after: seen) { woken.add("unwatched") }
        // Waiters run on the writer thread after the round's acknowledgements: a round that
        // follows (its own acknowledgement) is after them.
        var n = 0
        func afterWaiters() throws {
            n += 1
            try t.append([record("sync-\(n)", sink: "file:z")])
        }
        try t.append([record("second", sink: "file:b")])
        try afterWaiters()
        #expect(woken.all == ["file:b"])
        try t.append([record("third", sink: "file:a"), record("fourth", sink: "file:c")])
        try afterWaiters()
        #expect(woken.all == ["file:a", "file:b", "file:c"])
        // A sink no pipeline watches: the dispatcher's watch, once.
        try t.append([record("new", sink: "file:new"), record("again", sink: "file:z")])
        try t.append([record("newer", sink: "file:new")])
        try afterWaiters()
        #expect(woken.all == ["file:a", "file:b", "file:c", "unwatched"])
        // Registered when data after `seen` is already durable: called at once.
        let late = t.wal.watchData(sink: "file:d") { woken.add("file:d") }
        t.wal.arm(late, after: seen)
        #expect(woken.all.contains("file:d"))
        // A pipeline that left takes its watch with it.
        let watch = t.wal.watchData(sink: "file:e") { woken.add("file:e") }
        t.wal.arm(watch, after: t.wal.currentStats.durableSeq)
        t.wal.forgetDataWatch(watch)
        try t.append([record("fifth", sink: "file:e")])
        try afterWaiters()
        #expect(!woken.all.contains("file:e"))
    }

    /// Guards WAL invariant 1 (an acknowledgement only after fdatasync) through the combined
    /// append: its callback gets the outcomes once their round is durable, and at once, before
    /// append returns, when they depend on no round in progress.
    @Test func appendWithADurableCallbackGetsItsOutcomesWhenDurable() throws {
        let t = try TestWAL()
        let done = DispatchSemaphore(value: 0)
        let box = OutcomesBox()
        let wal = t.wal!
        let outcomes = wal.append([record("a"), record("b")], nowMillis: WallClock.millis()) { outcomes, result in
            box.set(outcomes, result, durableSeq: wal.currentStats.durableSeq)
            done.signal()
        }
        #expect(done.wait(timeout: .now() + 30) == .success)
        #expect(box.outcomes == outcomes)
        #expect(outcomes == [.accepted(seq: 1), .accepted(seq: 2)])
        #expect(box.succeeded)
        #expect(box.durableSeq >= 2, "called only once both records are durable")
        // Duplicates of durable records depend on no round: called before append returns.
        let again = OutcomesBox()
        let duplicates = t.wal.append([record("a")], nowMillis: WallClock.millis()) { outcomes, result in
            again.set(outcomes, result, durableSeq: 0)
        }
        #expect(duplicates == [.duplicate(seq: 1)])
        #expect(again.outcomes == duplicates)
        #expect(again.succeeded)
    }

    /// An appending thread keeps its encode buffers between appends (AppendScratch): a durable
    /// callback that appends again on the same thread, while the outer append has not returned,
    /// must not share them; a batch larger than what is kept (1 MiB) and the small one after it
    /// are written whole. Each record is read back byte for byte.
    @Test func appendsOnOneThreadKeepEachRecordTheirOwn() throws {
        let t = try TestWAL(segmentSize: 8 << 20)
        let wal = t.wal!
        try t.append([record("first", payload: #"{"n":"first"}"#)])
        let inner = OutcomesBox()
        let innerDone = DispatchSemaphore(value: 0)
        let outer = OutcomesBox()
        // A duplicate of a durable record: its callback runs at once, on this thread, inside append.
        let duplicate = wal.append([record("first")], nowMillis: WallClock.millis()) { outcomes, result in
            outer.set(outcomes, result, durableSeq: 0)
            let nested = wal.append(
                [record("nested-1", payload: #"{"n":"nested one"}"#), record("nested-2", payload: #"{"n":"two"}"#)],
                nowMillis: WallClock.millis()
            ) { outcomes, result in
                inner.set(outcomes, result, durableSeq: 0)
                innerDone.signal()
            }
            #expect(nested == [.accepted(seq: 2), .accepted(seq: 3)])
        }
        #expect(duplicate == [.duplicate(seq: 1)])
        #expect(outer.succeeded)
        #expect(innerDone.wait(timeout: .now() + 30) == .success)
        #expect(inner.succeeded)
        let big = String(repeating: "b", count: 300_000)
        let large = (0..<5).map { record("large-\($0)", payload: #"{"n":"\#(big)\#($0)"}"#) }
        try t.append(large)
        try t.append([record("after", payload: #"{"n":"after"}"#)])
        let read = try readAll(wal, sink: "file:a")
        #expect(read.map(\.record.id) == ["first", "nested-1", "nested-2"] + large.map(\.id) + ["after"])
        let expected =
            [#"{"n":"first"}"#, #"{"n":"nested one"}"#, #"{"n":"two"}"#]
            + large.map { String(decoding: $0.payload, as: UTF8.self) } + [#"{"n":"after"}"#]
        #expect(read.map { String(decoding: $0.record.payload, as: UTF8.self) } == expected)
    }

    /// Guards WAL invariant 3 (WriteAheadLog.swift).
    @Test func seqsKeepGrowingAcrossRestarts() throws {
        let t = try TestWAL()
        try t.append([record("a")])
        try t.restart()
        let outcomes = try t.append([record("b")])
        #expect(outcomes == [.accepted(seq: 2)])
        // Even when every segment was deleted, the progress file keeps the counter.
        let reader = t.wal.reader(for: "file:a")
        let all = try reader.next(maxRecords: 10)
        t.wal.markFinished(sink: "file:a", seqs: all.map(\.seq))
        try t.restart()
        #expect(t.segmentFiles().count == 1, "finished segments deleted, a fresh active one open")
        #expect(try t.append([record("c")]) == [.accepted(seq: 3)])
    }

    /// Guards WAL invariant 3 (WriteAheadLog.swift).
    @Test func duplicatesAreAnsweredWithTheOriginalSeqAcrossRestarts() throws {
        let t = try TestWAL()
        #expect(
            try t.append([record("x"), record("x"), record("x", sink: "file:b")]) == [
                .accepted(seq: 1), .duplicate(seq: 1), .accepted(seq: 2),
            ])
        try t.restart()
        #expect(try t.append([record("x")]) == [.duplicate(seq: 1)])
        // After a crash too: the copy has no summary for its active segment and scans it.
        try t.append([record("y")])
        let crashed = try t.crashCopy()
        #expect(try crashed.append([record("y"), record("z")]) == [.duplicate(seq: 3), .accepted(seq: 4)])
        #expect(
            try readAll(crashed.wal, sink: "file:a").map(\.record.id) == ["x", "y", "z"], "duplicates were not written")
    }

    @Test func dedupeWindowExpires() throws {
        let t = try TestWAL()
        let now = WallClock.millis()
        try t.append([record("x")], now: now)
        #expect(try t.append([record("x")], now: now + 599_000) == [.duplicate(seq: 1)])
        #expect(try t.append([record("x")], now: now + 601_000) == [.accepted(seq: 2)])
    }

    /// Guards WAL invariant 1 (WriteAheadLog.swift).
    @Test func crashLeavesEveryAcknowledgedRecord() throws {
        let t = try TestWAL(segmentSize: 64 << 10)
        for batch in 0..<20 {
            try t.append(
                (0..<50).map {
                    record("r-\(batch)-\($0)", payload: #"{"pad":"\#(String(repeating: "p", count: 200))"}"#)
                })
        }
        #expect(t.segmentFiles().count > 3, "tiny segments rotate")
        let crashed = try t.crashCopy()
        let ids = try readAll(crashed.wal, sink: "file:a").map(\.record.id)
        #expect(ids.count == 1000)
        #expect(Set(ids).count == 1000)
        #expect(crashed.wal.recoveryReport.scannedSegments == 1, "only the unsealed segment is scanned")
    }

    /// Guards WAL invariant 4 (WriteAheadLog.swift).
    @Test func finishedRecordsAreNotReadAgainAndSegmentsAreDeleted() throws {
        let t = try TestWAL(segmentSize: 16 << 10)
        try t.append(
            (0..<300).map { record("a-\($0)", sink: "file:a", payload: "\"\(String(repeating: "x", count: 100))\"") })
        try t.append((0..<10).map { record("b-\($0)", sink: "file:b") })
        let before = t.segmentFiles().count
        let reader = t.wal.reader(for: "file:a")
        var delivered: [UInt64] = []
        while case let batch = try reader.next(maxRecords: 64), !batch.isEmpty {
            delivered += batch.map(\.seq)
        }
        // Finish all but one record in the middle: its segment must stay.
        let held = delivered[150]
        t.wal.markFinished(sink: "file:a", seqs: delivered.filter { $0 != held })
        try t.wal.checkpoint()
        let after = t.segmentFiles().count
        #expect(after < before)
        try t.restart()
        #expect(try readAll(t.wal, sink: "file:a").map(\.seq) == [held], "only the unfinished record is replayed")
        #expect(try readAll(t.wal, sink: "file:b").count == 10, "another sink's records are untouched")
    }

    /// Guards WAL invariant 4 (WriteAheadLog.swift).
    @Test func outstandingRecordsAreReplayedAfterARestart() throws {
        let t = try TestWAL()
        try t.append((1...10).map { record("r\($0)") })
        let reader = t.wal.reader(for: "file:a")
        let first = try reader.next(maxRecords: 6)
        #expect(first.map(\.seq) == [1, 2, 3, 4, 5, 6])
        t.wal.markFinished(sink: "file:a", seqs: [1, 2, 4, 6])
        try t.restart()
        #expect(try readAll(t.wal, sink: "file:a").map(\.seq) == [3, 5, 7, 8, 9, 10])
    }

    @Test func readerSeesNewRecordsAsTheyBecomeDurable() throws {
        let t = try TestWAL()
        let reader = t.wal.reader(for: "file:a")
        #expect(try reader.next(maxRecords: 10).isEmpty)
        try t.append([record("1")])
        #expect(try reader.next(maxRecords: 10).map(\.record.id) == ["1"])
        try t.append([record("2"), record("3")])
        #expect(try reader.next(maxRecords: 10).map(\.record.id) == ["2", "3"])
        #expect(try reader.next(maxRecords: 10).isEmpty)
    }

    /// Guards WAL invariant 6 (WriteAheadLog.swift).
    @Test func tornTailOfTheLastSegmentIsTruncatedAtEveryOffset() throws {
        let t = try TestWAL()
        try t.append((1...3).map { record("r\($0)") })
        let segment = t.directory + "/" + t.segmentFiles().last!
        let full = try Data(contentsOf: URL(fileURLWithPath: segment))
        let lastFrameLength = SegmentFormat.frameHeaderSize + RecordCodec.encodedSize(record("r3"))
        let lastStart = full.count - lastFrameLength
        for cut in lastStart..<full.count {
            let copy = try t.crashCopy()
            copy.wal.shutdown()
            let copied = copy.directory + "/" + t.segmentFiles().last!
            try full.prefix(cut).write(to: URL(fileURLWithPath: copied))
            try FileManager.default.removeItem(atPath: copied.replacingOccurrences(of: ".wal", with: ".idx"))
            try copy.open()
            #expect(try readAll(copy.wal, sink: "file:a").map(\.record.id) == ["r1", "r2"], "cut at \(cut)")
            #expect(copy.wal.recoveryReport.tornTails.count == (cut == lastStart ? 0 : 1))
            let size = try FileManager.default.attributesOfItem(atPath: copied)[.size] as! Int
            #expect(size == lastStart, "truncated to the last whole record")
        }
    }

    /// Guards WAL invariant 6 (WriteAheadLog.swift).
    @Test func corruptRecordIsSkippedCountedAndTheRestKept() throws {
        let t = try TestWAL()
        try t.append((1...5).map { record("r\($0)") })
        let copy = try t.crashCopy()
        copy.wal.shutdown()
        let name = copy.segmentFiles().first(where: {
            (try? Data(contentsOf: URL(fileURLWithPath: copy.directory + "/" + $0)).count) ?? 0 > 100
        })!
        let file = URL(fileURLWithPath: copy.directory + "/" + name)
        var bytes = try Data(contentsOf: file)
        let frameLength = SegmentFormat.frameHeaderSize + RecordCodec.encodedSize(record("r1"))
        bytes[SegmentFormat.headerSize + frameLength + 30] ^= 0x40  // inside record 2's body
        try bytes.write(to: file)
        try FileManager.default.removeItem(atPath: file.path.replacingOccurrences(of: ".wal", with: ".idx"))
        try copy.open()
        #expect(try readAll(copy.wal, sink: "file:a").map(\.record.id) == ["r1", "r3", "r4", "r5"])
        #expect(copy.wal.recoveryReport.corruptFrames.count == 1)
        #expect(copy.wal.currentStats.corruptFramesAtStart == 1)
        // A second start does not complain again: the summary was rebuilt.
        try copy.restart()
        #expect(copy.wal.recoveryReport.scannedSegments == 0)
    }

    /// Random damage to every file of a crashed WAL (segments, summaries, progress): each start
    /// succeeds, loses at most the records whose frames were hit, and the next start is quiet.
    /// Seeded; a failure names the seed (SINKD_TEST_SEED reruns it).
    /// Guards WAL invariant 6 (WriteAheadLog.swift).
    @Test(arguments: 0..<8)
    func randomBitFlipsInEveryFileNeverStopTheWALFromStarting(_ round: Int) throws {
        let seed =
            ProcessInfo.processInfo.environment["SINKD_TEST_SEED"].flatMap(UInt64.init)
            ?? UInt64.random(in: 1...UInt64(UInt32.max))
        var rng = SeededGenerator(seed: seed &+ UInt64(round))
        let t = try TestWAL(segmentSize: 64 << 10)
        let total = 300
        try t.append(
            (0..<total).map { record("r\($0)", payload: #"{"pad":"\#(String(repeating: "x", count: 400))"}"#) })
        let copy = try t.crashCopy()
        copy.wal.shutdown()
        let files = try FileManager.default.contentsOfDirectory(atPath: copy.directory).filter { !$0.hasPrefix(".") }
            .sorted()
        var flipsInSegments = 0
        for _ in 0..<Int.random(in: 1...12, using: &rng) {
            let name = files.randomElement(using: &rng)!
            let url = URL(fileURLWithPath: copy.directory + "/" + name)
            var bytes = try Data(contentsOf: url)
            // A segment's 16-byte header is left alone: a segment without one is quarantined
            // whole (unreadableSegmentGoesToQuarantine), which this count does not allow for.
            let first = name.hasSuffix(".wal") ? SegmentFormat.headerSize : 0
            guard bytes.count > first else { continue }
            bytes[Int.random(in: first..<bytes.count, using: &rng)] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
            try bytes.write(to: url)
            if name.hasSuffix(".wal") { flipsInSegments += 1 }
        }
        try copy.open()
        let ids = Set(try readAll(copy.wal, sink: "file:a").map(\.record.id))
        #expect(
            ids.count >= total - flipsInSegments,
            "seed \(seed &+ UInt64(round)): \(ids.count) of \(total) readable after \(flipsInSegments) flips in segments"
        )
        #expect(ids.isSubset(of: Set((0..<total).map { "r\($0)" })), "seed \(seed &+ UInt64(round)): nothing invented")
        try copy.restart()
        #expect(
            copy.wal.recoveryReport.corruptFrames.isEmpty && copy.wal.recoveryReport.quarantined.isEmpty,
            "the second start finds nothing new to repair")
    }

    /// Guards WAL invariant 6 (WriteAheadLog.swift).
    @Test func unreadableSegmentGoesToQuarantine() throws {
        let t = try TestWAL()
        try t.append([record("r1")])
        t.wal.shutdown()
        let bogus = t.directory + "/" + SegmentFormat.fileName(id: 0)
        try Data("this is not a segment at all".utf8).write(to: URL(fileURLWithPath: bogus))
        try t.open()
        #expect(t.wal.recoveryReport.quarantined.map(\.segment) == [SegmentFormat.fileName(id: 0)])
        #expect(FileManager.default.fileExists(atPath: t.directory + "/quarantine/" + SegmentFormat.fileName(id: 0)))
        #expect(try readAll(t.wal, sink: "file:a").map(\.record.id) == ["r1"])
        try t.restart()
        #expect(t.wal.recoveryReport.quarantined.isEmpty, "no crash loop, no repeated quarantine")
    }

    /// Guards WAL invariant 6 (WriteAheadLog.swift).
    @Test func emptySegmentFromAnInterruptedCreateIsRemoved() throws {
        let t = try TestWAL()
        try t.append([record("r1")])
        t.wal.shutdown()
        _ = FileManager.default.createFile(
            atPath: t.directory + "/" + SegmentFormat.fileName(id: 99), contents: Data([0x53, 0x49]))
        try t.open()
        #expect(try readAll(t.wal, sink: "file:a").count == 1)
        #expect(!t.files().contains(SegmentFormat.fileName(id: 99)))
    }

    /// Guards WAL invariant 2 (WriteAheadLog.swift).
    @Test func rejectWhenFull() throws {
        let payload = "\"" + String(repeating: "x", count: 1000) + "\""
        let t = try TestWAL(segmentSize: 16 << 10, maxSize: 40 << 10, whenFull: .reject)
        var outcomes: [AppendOutcome] = []
        for i in 0..<60 { outcomes += try t.append([record("r\(i)", payload: payload)]) }
        #expect(outcomes.contains(.full))
        #expect(outcomes.prefix(30).allSatisfy { if case .accepted = $0 { true } else { false } })
        // Delivering everything frees the space.
        let reader = t.wal.reader(for: "file:a")
        var seqs: [UInt64] = []
        while case let b = try reader.next(maxRecords: 100), !b.isEmpty { seqs += b.map(\.seq) }
        t.wal.markFinished(sink: "file:a", seqs: seqs)
        try t.restart()  // seals the active segment so that it can be deleted
        try t.wal.checkpoint()
        #expect(try t.append([record("after", payload: payload)]) == [.accepted(seq: UInt64(seqs.count + 1))])
    }

    /// Guards WAL invariant 2 (WriteAheadLog.swift).
    @Test func blockWhenFullStopsAtTheFirstRecordThatDoesNotFit() throws {
        let payload = "\"" + String(repeating: "x", count: 1000) + "\""
        let t = try TestWAL(segmentSize: 16 << 10, maxSize: 40 << 10, whenFull: .block)
        var batch = (0..<60).map { record("r\($0)", payload: payload) }
        let (outcomes, ticket) = t.wal.append(batch, nowMillis: WallClock.millis())
        #expect(outcomes.last == .full)
        #expect(outcomes.count < 60)
        _ = t.wait(ticket)
        let waiting = DispatchSemaphore(value: 0)
        t.wal.whenSpaceAvailable(bytes: WriteAheadLog.frameLength(of: batch[outcomes.count - 1])) { waiting.signal() }
        #expect(waiting.wait(timeout: .now() + .milliseconds(200)) == .timedOut, "no space yet")
        let reader = t.wal.reader(for: "file:a")
        var seqs: [UInt64] = []
        while case let b = try reader.next(maxRecords: 100), !b.isEmpty { seqs += b.map(\.seq) }
        t.wal.markFinished(sink: "file:a", seqs: seqs)
        // Rotation seals full segments; the checkpoint deletes them and wakes the waiter.
        batch = []
        try t.wal.checkpoint()
        #expect(waiting.wait(timeout: .now() + .seconds(5)) == .success)
    }

    /// Guards WAL invariants 1 and 2 (WriteAheadLog.swift).
    @Test func failedFsyncAcknowledgesNothingAndMovesToANewSegment() throws {
        let t = try TestWAL(whenFull: .reject)
        try t.append([record("before")])
        let segmentsBefore = t.segmentFiles()
        FaultInjector.shared.arm(.fsync, errno: EIO, under: t.directory)
        defer { FaultInjector.shared.disarm(under: t.directory) }
        let (outcomes, ticket) = t.wal.append([record("lost")], nowMillis: WallClock.millis())
        #expect(outcomes == [.accepted(seq: 2)])
        let result = t.wait(ticket)
        #expect(result.isFailure)
        // The id can be sent again: the failed record left the dedupe table.
        #expect(try t.append([record("lost")]) == [.accepted(seq: 3)])
        #expect(
            t.segmentFiles().count == segmentsBefore.count + 1,
            "the failed segment was closed; the next round opened a new one")
        try t.restart()
        #expect(try readAll(t.wal, sink: "file:a").map(\.record.id) == ["before", "lost"])
    }

    /// Guards WAL invariant 2 (WriteAheadLog.swift).
    @Test func noSpaceWithRejectFailsTheRound() throws {
        let t = try TestWAL(whenFull: .reject)
        FaultInjector.shared.arm(.write, errno: ENOSPC, under: t.directory)
        defer { FaultInjector.shared.disarm(under: t.directory) }
        let (_, ticket) = t.wal.append([record("x")], nowMillis: WallClock.millis())
        guard case .failure(let error) = t.wait(ticket) else {
            Issue.record("expected a failure")
            return
        }
        #expect(error.isNoSpace)
        #expect(try t.append([record("y")]) == [.accepted(seq: 2)])
    }

    /// Guards WAL invariant 2 (WriteAheadLog.swift).
    @Test func noSpaceWithBlockHoldsTheRoundUntilSpaceReturns() throws {
        let t = try TestWAL(whenFull: .block)
        FaultInjector.shared.arm(.write, errno: ENOSPC, times: 3, under: t.directory)
        defer { FaultInjector.shared.disarm(under: t.directory) }
        let (_, ticket) = t.wal.append([record("x")], nowMillis: WallClock.millis())
        #expect(throws: Never.self) { try t.wait(ticket).get() }
        try t.restart()
        #expect(try readAll(t.wal, sink: "file:a").map(\.record.id) == ["x"])
    }

    @Test func shutdownRefusesNewAppends() throws {
        let t = try TestWAL()
        t.wal.shutdown()
        let (outcomes, _) = t.wal.append([record("late")], nowMillis: WallClock.millis())
        #expect(outcomes == [.shuttingDown])
        try t.open()
    }
}

@Suite(.serialized, .blockingThreads) struct WALModesAndDeletionTests {
    /// Guards WAL invariant 1 (WriteAheadLog.swift).
    @Test func intervalModeAcknowledgesAfterTheWriteAndSyncsOnTheInterval() throws {
        let t = try TestWAL(fsync: .interval)
        try t.append((1...10).map { record("i\($0)") })
        let deadline = Date().addingTimeInterval(5)
        while t.wal.currentStats.fsyncs == 0, Date() < deadline { usleep(10_000) }
        #expect(t.wal.currentStats.fsyncs >= 1, "a sync follows within fsync_interval")
        let crashed = try t.crashCopy()
        #expect(try readAll(crashed.wal, sink: "file:a").count == 10)
    }

    /// Guards WAL invariant 1 (WriteAheadLog.swift).
    @Test func neverModeStillKeepsRecordsAcrossAProcessCrash() throws {
        let t = try TestWAL(fsync: .never)
        try t.append((1...10).map { record("n\($0)") })
        #expect(t.wal.currentStats.fsyncs == 0)
        let crashed = try t.crashCopy()
        #expect(try readAll(crashed.wal, sink: "file:a").count == 10)
    }

    /// Guards WAL invariant 4 (WriteAheadLog.swift).
    @Test func crashAfterSavingProgressButBeforeUnlinkingFinishesTheDeletion() throws {
        let t = try TestWAL(segmentSize: 8 << 10)
        try t.append((0..<100).map { record("d\($0)", payload: "\"\(String(repeating: "q", count: 200))\"") })
        t.wal.shutdown()
        let segments = t.segmentFiles()
        #expect(segments.count > 2)
        // The progress of a run that finished everything, as if it was saved and then sinkd died
        // before unlinking anything.
        var progress = DeliveryProgress()
        for seq in 1...100 as ClosedRange<UInt64> {
            progress.handedOut(sink: "file:a", seq: seq)
            progress.finished(sink: "file:a", seq: seq)
        }
        progress.nextSeq = 101
        for slot in ProgressStore.slotNames {
            try Data(ProgressStore.encodeSlot(generation: 1000, progress)).write(
                to: URL(fileURLWithPath: t.directory + "/" + slot))
        }
        try t.open()
        #expect(t.wal.recoveryReport.deletedFinishedSegments == segments.count)
        #expect(try readAll(t.wal, sink: "file:a").isEmpty)
        #expect(try t.append([record("next")]) == [.accepted(seq: 101)])
    }

    /// Guards WAL invariant 4 (WriteAheadLog.swift).
    @Test func crashBetweenUnlinkingASegmentAndItsSummaryIsTidiedUp() throws {
        let t = try TestWAL(segmentSize: 8 << 10)
        try t.append((0..<100).map { record("s\($0)", payload: "\"\(String(repeating: "q", count: 200))\"") })
        t.wal.shutdown()
        let first = t.segmentFiles().first!
        try FileManager.default.removeItem(atPath: t.directory + "/" + first)  // the .idx stays behind
        try t.open()
        #expect(!t.files().contains(first.replacingOccurrences(of: ".wal", with: ".idx")))
        #expect(
            try readAll(t.wal, sink: "file:a").count < 100, "the deleted segment's records are gone, the rest are read")
    }

    /// Guards WAL invariant 5 (WriteAheadLog.swift).
    @Test func startUpReadsSummariesNotSegments() throws {
        let t = try TestWAL(segmentSize: 16 << 10)
        for batch in 0..<10 {
            try t.append(
                (0..<100).map { record("b\(batch)-\($0)", payload: "\"\(String(repeating: "w", count: 100))\"") })
        }
        try t.restart()
        #expect(t.segmentFiles().count >= 10)
        #expect(t.wal.recoveryReport.scannedSegments == 0)
        #expect(t.wal.recoveryReport.records == 1000)
    }
}

/// Which waiters ran (callbacks run on the WAL's writer thread).
final class OutcomesBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: (outcomes: [AppendOutcome], succeeded: Bool, durableSeq: UInt64)?
    func set(_ outcomes: [AppendOutcome], _ result: Result<Void, WALWriteError>, durableSeq: UInt64) {
        lock.withLock { value = (outcomes, (try? result.get()) != nil, durableSeq) }
    }
    var outcomes: [AppendOutcome]? { lock.withLock { value?.outcomes } }
    var succeeded: Bool { lock.withLock { value?.succeeded ?? false } }
    var durableSeq: UInt64 { lock.withLock { value?.durableSeq ?? 0 } }
}

final class WokenSinks: @unchecked Sendable {
    private let lock = NSLock()
    private var names: [String] = []
    func add(_ name: String) { lock.withLock { names.append(name) } }
    var all: [String] { lock.withLock { names.sorted() } }
}
