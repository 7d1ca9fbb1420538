import Foundation
import Testing
import SinkdTestSupport
import SinkdCore
@testable import SinkdWAL

/// What a hostile disk does to the WAL: write and sync errors in every fsync mode, a full file
/// system, damaged and odd state, a second daemon. Each checks what users see: every seq
/// answered accepted is still readable, the WAL starts, memory stays bounded.
@Suite(.serialized, .blockingThreads) struct DiskFaultTests {
    static let payload = "\"" + String(repeating: "p", count: 1000) + "\""

    // MARK: item 1: a failure after records were acknowledged on write

    /// Guards WAL invariant 2 (WriteAheadLog.swift).
    @Test(arguments: [FsyncMode.interval, .never])
    func writeFailureNeverRemovesAcknowledgedRecords(_ mode: FsyncMode) throws {
        let t = try TestWAL(whenFull: .reject, fsync: mode)
        t.options.fsyncInterval = .seconds(30)
        try t.restart()
        let acked = try t.append((0..<10).map { record("a\($0)", payload: Self.payload) })
        #expect(acked.count == 10)
        FaultInjector.shared.arm(.write, errno: EIO, under: t.directory)
        defer { FaultInjector.shared.disarm(under: t.directory) }
        let (_, ticket) = t.wal.append([record("failed")], nowMillis: WallClock.millis())
        #expect(t.wait(ticket).isFailure)
        #expect(try t.append([record("after")]) == [.accepted(seq: 12)])
        let crashed = try t.crashCopy()
        let ids = try readAll(crashed.wal, sink: "file:a").map(\.record.id)
        #expect(
            ids == (0..<10).map { "a\($0)" } + ["after"],
            "acknowledged records are never cut off; the failed one is not there")
        if mode == .interval {
            #expect(
                t.wal.currentStats.rewrittenRecords == 10,
                "interval: the unsynced records were written again from sinkd's copy")
        }
    }

    /// Guards WAL invariant 2 (WriteAheadLog.swift).
    @Test func failedIntervalSyncRewritesWhatWasAcknowledged() throws {
        let t = try TestWAL(whenFull: .reject, fsync: .interval)
        t.options.fsyncInterval = .seconds(30)
        try t.restart()
        try t.append((0..<20).map { record("s\($0)") })
        // The next fdatasync (the seal at shutdown) fails: Linux may have dropped those pages.
        FaultInjector.shared.arm(.fsync, errno: EIO, under: t.directory)
        t.wal.shutdown()
        FaultInjector.shared.disarm(under: t.directory)
        #expect(t.wal.currentStats.rewrittenRecords == 20)
        try t.open()
        #expect(try readAll(t.wal, sink: "file:a").map(\.record.id) == (0..<20).map { "s\($0)" })
    }

    /// A failure outside any round (the seal's fdatasync at shutdown, an interval sync) keeps
    /// every frame written, the last round's included.
    /// Guards WAL invariant 2 (WriteAheadLog.swift).
    @Test(arguments: [FsyncMode.interval, .never])
    func aFailedSyncOutsideARoundKeepsTheLastRound(_ mode: FsyncMode) throws {
        let t = try TestWAL(whenFull: .reject, fsync: mode)
        t.options.fsyncInterval = .seconds(30)
        try t.restart()
        try t.append((0..<3).map { record("x\($0)") })
        try t.append((3..<6).map { record("x\($0)") })
        FaultInjector.shared.arm(.fsync, errno: EIO, times: 1, under: t.directory)
        t.wal.shutdown()
        FaultInjector.shared.disarm(under: t.directory)
        try t.open()
        #expect(try readAll(t.wal, sink: "file:a").map(\.record.id) == (0..<6).map { "x\($0)" })
    }

    /// A batch whose answers depend on a round that fails and on a later one that succeeds (a
    /// duplicate of a record in the failing round, then a new record) is answered with the
    /// failure: the duplicate's original never became durable. Both appends are the combined
    /// append of ingest (`append(_:nowMillis:whenDurable:)`); the writer is held inside the first
    /// round's fdatasync while the second batch is appended, then that fdatasync fails.
    /// Guards WAL invariant 1 (WriteAheadLog.swift).
    @Test func aTicketSpanningAFailedRoundAndALaterOneFails() throws {
        let t = try TestWAL(whenFull: .reject, fsync: .always)
        let wal = t.wal!
        try t.append([record("before")])
        let hold = FaultInjector.shared.hold(.fsync, under: t.directory)
        defer {
            hold.release()  // an expectation that stopped the test early must not leave the writer held
            FaultInjector.shared.disarm(under: t.directory)
        }
        let first = OutcomesBox()
        let firstDone = DispatchSemaphore(value: 0)
        let original = wal.append([record("original")], nowMillis: WallClock.millis()) { outcomes, result in
            first.set(outcomes, result, durableSeq: 0)
            firstDone.signal()
        }
        #expect(original == [.accepted(seq: 2)])
        try #require(hold.waitUntilHeld(seconds: 30), "the writer reached the first round's fdatasync")
        let second = OutcomesBox()
        let secondDone = DispatchSemaphore(value: 0)
        let spanning = wal.append([record("original"), record("new")], nowMillis: WallClock.millis()) {
            outcomes, result in
            second.set(outcomes, result, durableSeq: 0)
            secondDone.signal()
        }
        #expect(
            spanning == [.duplicate(seq: 2), .accepted(seq: 3)], "the duplicate depends on the round being written")
        hold.release(failingWith: EIO)
        #expect(firstDone.wait(timeout: .now() + 30) == .success)
        #expect(!first.succeeded, "the first round failed")
        #expect(secondDone.wait(timeout: .now() + 30) == .success)
        #expect(!second.succeeded, "answered with the failure, although its own new record is durable")
        // The failed record left the dedupe table: sent again, it is a new record.
        let again = try t.append([record("original")])
        #expect(again == [.accepted(seq: 4)])
        let ids = try readAll(wal, sink: "file:a").map(\.record.id)
        #expect(ids == ["before", "new", "original"])
    }

    // MARK: items 1 and 2: a real full file system, every mode

    struct Mode: Sendable, CustomStringConvertible {
        var fsync: FsyncMode
        var whenFull: WhenFull
        var description: String { "\(fsync)/\(whenFull)" }
    }

    static let modes: [Mode] = [FsyncMode.always, .interval, .never].flatMap { f in
        [WhenFull.block, .reject].map { Mode(fsync: f, whenFull: $0) }
    }

    /// Guards WAL invariant 2 (WriteAheadLog.swift).
    @Test(arguments: modes)
    func fullFileSystemLosesNoAcknowledgedRecord(_ mode: Mode) throws {
        let fs = try SmallFileSystem(bytes: 2 << 20)
        let filler = fs.fill(bytes: 512 << 10)
        let t = try TestWAL(
            segmentSize: 256 << 10, maxSize: 64 << 20, whenFull: mode.whenFull, fsync: mode.fsync,
            directory: fs.path + "/wal")
        var accepted: [String: UInt64] = [:]
        var failed = 0
        var timedOut: AppendTicket?
        outer: for batch in 0..<400 {
            let records = (0..<10).map { record("r\(batch)-\($0)", payload: Self.payload) }
            let (outcomes, ticket) = t.wal.append(records, nowMillis: WallClock.millis())
            let done = DispatchSemaphore(value: 0)
            let result = LockedResult()
            t.wal.whenDurable(ticket) { r in
                result.set(r)
                done.signal()
            }
            if done.wait(timeout: .now() + .seconds(3)) == .timedOut {
                // block: the writer holds the round while the disk is full.
                #expect(mode.whenFull == .block, "only block mode waits")
                timedOut = ticket
                let stats = t.wal.currentStats
                #expect(stats.diskFullSinceMillis > 0, "a full disk is a reported state")
                #expect(stats.writingSinceNanos == 0, "no system call hangs: the watchdog keeps pinging")
                #expect(stats.pendingBytes <= t.options.pendingBudget + 2048, "memory held is bounded by the budget")
                // Space returns: the held round is written, nothing is lost.
                try FileManager.default.removeItem(atPath: filler)
                #expect(
                    done.wait(timeout: .now() + .seconds(10)) == .success, "the held round completes once space returns"
                )
                if case .success = result.get() {
                    for (i, o) in outcomes.enumerated() {
                        if case .accepted(let seq) = o { accepted[records[i].id] = seq }
                    }
                }
                break outer
            }
            switch result.get() {
            case .success:
                for (i, o) in outcomes.enumerated() { if case .accepted(let seq) = o { accepted[records[i].id] = seq } }
            case .failure(let error):
                #expect(mode.whenFull == .reject)
                #expect(error.isNoSpace)
                failed += 1
                if failed > 20 { break outer }
            case nil:
                Issue.record("no result")
            }
        }
        if mode.whenFull == .block {
            #expect(timedOut != nil, "the disk filled up")
        } else {
            #expect(failed > 0, "the disk filled up")
        }
        #expect(!accepted.isEmpty)
        // Restart on the (possibly still full) file system: it must start and keep every record.
        try t.restart()
        let read = try readAll(t.wal, sink: "file:a")
        let found = Dictionary(read.map { ($0.record.id, $0.seq) }, uniquingKeysWith: { a, _ in a })
        let missing = accepted.filter { found[$0.key] != $0.value }
        #expect(missing.isEmpty, "\(missing.count) acknowledged records missing, e.g. \(missing.prefix(3))")
        // And a resend of an accepted id is a duplicate of a record that is really there.
        if let (id, seq) = accepted.first {
            #expect(try t.append([record(id, payload: Self.payload)]) == [.duplicate(seq: seq)])
        }
    }

    /// Guards WAL invariant 4 (WriteAheadLog.swift).
    @Test func startsOnAFullDiskAndFreesSpaceByDelivering() throws {
        let fs = try SmallFileSystem(bytes: 2 << 20)
        let t = try TestWAL(segmentSize: 128 << 10, maxSize: 64 << 20, whenFull: .reject, directory: fs.path + "/wal")
        for b in 0..<8 { try t.append((0..<10).map { record("d\(b)-\($0)", payload: Self.payload) }) }
        t.wal.shutdown()
        _ = fs.fill()  // nothing left, not even for a summary or a new segment
        try t.open()
        let reader = t.wal.reader(for: "file:a")
        var seqs: [UInt64] = []
        while case let b = try reader.next(maxRecords: 100), !b.isEmpty { seqs += b.map(\.seq) }
        #expect(seqs.count == 80)
        t.wal.markFinished(sink: "file:a", seqs: seqs)
        try t.wal.checkpoint()  // progress is saved in place: no free space needed
        #expect(t.segmentFiles().count < 8, "finished segments were deleted, freeing space")
    }

    // MARK: item 4: two daemons

    @Test func aSecondWALOnTheSameDirectoryIsRefusedWithTheHoldersPid() throws {
        let t = try TestWAL()
        try t.append([record("one")])
        #expect {
            _ = try WriteAheadLog(options: t.options, logger: TestWAL.logger)
        } throws: { error in
            let text = "\(error)"
            return text.contains("pid \(getpid())") && text.contains(t.directory) && text.contains("another sinkd")
        }
        #expect(try t.append([record("two")]) == [.accepted(seq: 2)], "the first keeps working")
        try t.restart()  // the lock goes with shutdown
        #expect(try readAll(t.wal, sink: "file:a").count == 2)
    }

    // MARK: item 5: oddities in the state directory

    /// Guards WAL invariant 6 (WriteAheadLog.swift).
    @Test func oddEntriesAreMovedAsideAndStartGoesOn() throws {
        let t = try TestWAL()
        try t.append([record("kept")])
        t.wal.shutdown()
        let fm = FileManager.default
        try fm.removeItem(atPath: t.directory + "/progress.0")
        try fm.createDirectory(atPath: t.directory + "/progress.0", withIntermediateDirectories: false)
        try fm.createDirectory(atPath: t.directory + "/leftover.tmp", withIntermediateDirectories: false)
        _ = fm.createFile(atPath: t.directory + "/leftover.tmp/x", contents: Data([1]))
        _ = fm.createFile(atPath: t.directory + "/quarantine", contents: Data("not a directory".utf8))
        // A segment with a bad header, which must go to quarantine/.
        _ = fm.createFile(
            atPath: t.directory + "/" + SegmentFormat.fileName(id: 99), contents: Data(repeating: 0x41, count: 64))
        try fm.createSymbolicLink(
            atPath: t.directory + "/" + SegmentFormat.summaryFileName(id: 98), withDestinationPath: "/etc/passwd")
        try t.open()
        #expect(try readAll(t.wal, sink: "file:a").map(\.record.id) == ["kept"])
        var isDir: ObjCBool = false
        #expect(fm.fileExists(atPath: t.directory + "/quarantine", isDirectory: &isDir) && isDir.boolValue)
        let quarantined = try fm.contentsOfDirectory(atPath: t.directory + "/quarantine")
        #expect(quarantined.contains(SegmentFormat.fileName(id: 99)))
        #expect(quarantined.contains { $0.hasPrefix("progress.0.") })
        #expect(quarantined.contains { $0.hasPrefix("leftover.tmp.") })
        #expect(t.wal.recoveryReport.quarantined.count >= 4)
        // It keeps working and a restart is clean.
        #expect(try t.append([record("next")]) == [.accepted(seq: 2)])
        try t.restart()
        #expect(try readAll(t.wal, sink: "file:a").count == 2)
    }

    /// Guards WAL invariants 3 and 6 (WriteAheadLog.swift).
    @Test func anEIOReadingAProgressCopyMovesItAsideAndStartGoesOn() throws {
        let t = try TestWAL()
        try t.append((0..<3).map { record("e\($0)") })
        let reader = t.wal.reader(for: "file:a")
        t.wal.markFinished(sink: "file:a", seqs: try reader.next(maxRecords: 2).map(\.seq))
        try t.restart()
        t.wal.shutdown()
        FaultInjector.shared.arm(.read, errno: EIO, under: t.directory)  // the first file read at start is progress.0
        defer { FaultInjector.shared.disarm(under: t.directory) }
        try t.open()
        #expect(try readAll(t.wal, sink: "file:a").map(\.record.id) == ["e2"], "the other copy's progress is used")
        #expect(t.wal.recoveryReport.quarantined.contains { $0.segment == "progress.0" })
        #expect(try t.append([record("f")]) == [.accepted(seq: 4)])
    }

    // MARK: item 6: the seq floor

    /// Guards WAL invariant 3 (WriteAheadLog.swift).
    @Test(arguments: ProgressStore.slotNames)
    func seqsNeverGoBackwardsWhenOneProgressFileIsDamaged(_ damaged: String) throws {
        let t = try TestWAL()
        try t.append((0..<5).map { record("f\($0)") })
        let reader = t.wal.reader(for: "file:a")
        t.wal.markFinished(sink: "file:a", seqs: try reader.next(maxRecords: 10).map(\.seq))
        try t.restart()
        try t.restart()  // everything delivered and deleted
        #expect(t.segmentFiles().count == 1)
        t.wal.shutdown()
        let file = t.directory + "/" + damaged
        var bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        bytes[20] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: file))
        try t.open()
        #expect(try t.append([record("g")]) == [.accepted(seq: 6)])
    }

    /// Guards WAL invariant 3 (WriteAheadLog.swift).
    @Test func seqsNeverGoBackwardsWhenOneProgressFileIsLost() throws {
        let t = try TestWAL()
        try t.append((0..<5).map { record("f\($0)") })
        let reader = t.wal.reader(for: "file:a")
        t.wal.markFinished(sink: "file:a", seqs: try reader.next(maxRecords: 10).map(\.seq))
        try t.restart()
        t.wal.shutdown()
        try FileManager.default.removeItem(atPath: t.directory + "/progress.1")
        try t.open()
        #expect(try t.append([record("g")]) == [.accepted(seq: 6)])
    }

    // MARK: item 7: dedupe after a restart

    @Test func dedupeWindowIsMeasuredPerRecordAfterARestart() throws {
        let t = try TestWAL()
        t.options.dedupeWindow = .seconds(20)
        try t.restart()
        let now = WallClock.millis()
        try t.append([record("A")], now: now - 23_000)
        try t.append([record("B")], now: now - 11_000)
        try t.restart()
        #expect(
            try t.append([record("B")], now: now) == [.duplicate(seq: 2)], "B was accepted 11 s ago: within the window")
        #expect(try t.append([record("A")], now: now) == [.accepted(seq: 3)], "A was accepted 23 s ago: outside it")
    }

    @Test func dedupeKeysOfSinksAndIdsWithNULsDoNotCollide() throws {
        let t = try TestWAL()
        let first = EventRecord(id: "a\u{0}b", sink: "redis:s", payload: Array("1".utf8))
        let second = EventRecord(id: "b", sink: "redis:s\u{0}a", payload: Array("2".utf8))
        #expect(try t.append([first, second]) == [.accepted(seq: 1), .accepted(seq: 2)])
    }
}

final class LockedResult: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Result<Void, WALWriteError>?
    func set(_ r: Result<Void, WALWriteError>) { lock.withLock { value = r } }
    func get() -> Result<Void, WALWriteError>? { lock.withLock { value } }
}

/// Item 3: damage met while running is counted, logged, kept in quarantine/, never passed over
/// silently, and never pins a reader or leaves a seq outstanding.
@Suite(.serialized, .blockingThreads) struct RunningCorruptionTests {
    /// Flips a byte of the payload of record `id` in the segment holding it.
    static func damage(_ t: TestWAL, id: String) throws {
        for name in t.segmentFiles() {
            let file = t.directory + "/" + name
            var bytes = try Data(contentsOf: URL(fileURLWithPath: file))
            guard let range = bytes.range(of: Data("\"\(id)\"".utf8)) else { continue }
            bytes[range.lowerBound + 1] ^= 0x20
            try bytes.write(to: URL(fileURLWithPath: file))
            return
        }
        throw TestFailure("no record \(id)")
    }

    /// Guards WAL invariant 6 (WriteAheadLog.swift).
    @Test func aFrameDamagedInASealedSegmentIsReportedAndQuarantined() throws {
        let t = try TestWAL()
        try t.append((1...3).map { record("c\($0)", payload: #"{"v":"c\#($0)"}"#) })
        try t.restart()  // sealed, with a valid summary: not scanned at the next start
        try t.restart()
        try Self.damage(t, id: "c2")
        let read = try readAll(t.wal, sink: "file:a")
        #expect(read.map(\.record.id) == ["c1", "c3"])
        #expect(t.wal.currentStats.corruptFramesRunning == 1, "counted")
        let quarantined = (try? FileManager.default.contentsOfDirectory(atPath: t.directory + "/quarantine")) ?? []
        #expect(quarantined.contains { $0.hasSuffix(".damaged") }, "its bytes are kept: \(quarantined)")
    }

    /// Guards WAL invariants 4 and 6 (WriteAheadLog.swift).
    @Test func aDamagedRecordHandedOutBeforeARestartDoesNotStayOutstanding() throws {
        let t = try TestWAL()
        try t.append((1...4).map { record("o\($0)", payload: #"{"v":"o\#($0)"}"#) })
        let reader = t.wal.reader(for: "file:a")
        #expect(try reader.next(maxRecords: 10).count == 4)  // handed out, not finished
        // Handing out does not make progress dirty (SinkReader.handedOut): the handed-out seqs
        // are saved with the next checkpoint after something finishes. Without this, whether
        // they were saved before the restart followed the machine's timing: a loaded CI run
        // restarted with seq 2 not outstanding (read as new, its damage counted as a corrupt
        // frame, nothing counted lost).
        t.wal.markFinished(sink: "file:a", seqs: [4])
        try t.wal.checkpoint()
        try t.restart()
        try t.restart()
        try Self.damage(t, id: "o2")
        let replayed = try readAll(t.wal, sink: "file:a")
        #expect(replayed.map(\.seq) == [1, 3])
        #expect(
            !t.wal.progress(of: "file:a").outstanding.contains(2), "the lost seq is finished, not outstanding forever")
        #expect(t.wal.currentStats.corruptRecordsLost == 1)
        t.wal.markFinished(sink: "file:a", seqs: [1, 3])
        try t.restart()  // seals the active segment
        try t.wal.checkpoint()
        #expect(try readAll(t.wal, sink: "file:a").isEmpty)
    }

    /// Guards WAL invariant 6 (WriteAheadLog.swift).
    @Test func aFrameWithAValidChecksumButAnUndecodableBodyDoesNotPinTheReader() throws {
        let t = try TestWAL()
        try t.append([record("u1")])
        t.wal.shutdown()
        // A frame for the same sink whose checksum is right but whose body ends early.
        var body: [UInt8] = []
        RecordCodec.encode(record("u2", payload: #"{"v":"long enough to cut"}"#), into: &body)
        body.removeLast(8)
        var crc = CRC32C()
        crc.update(body)
        var frame: [UInt8] = []
        SegmentFormat.appendFrame(seq: 2, body: body, bodyCRC: crc, to: &frame)
        let segment = t.directory + "/" + t.segmentFiles().last!
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: segment))
        handle.seekToEndOfFile()
        handle.write(Data(frame))
        try handle.close()
        try t.open()
        try t.append([record("u3")])
        let reader = t.wal.reader(for: "file:a")
        var ids: [String] = []
        for _ in 0..<3 { ids += try reader.next(maxRecords: 10).map(\.record.id) }
        #expect(ids == ["u1", "u3"])
        #expect(t.wal.currentStats.corruptFramesRunning == 1)
    }
}

/// EIO at every step: each kind of file operation the WAL performs (write, fdatasync, ftruncate,
/// rename, directory fsync) fails once, at its k-th occurrence, in a run that appends across
/// segment rollovers, reads, finishes records and checkpoints (progress saves and segment
/// deletions). Whatever fails: every record acknowledged and not finished is there after a
/// restart, with its id; nothing finished comes back; the byte count equals the files' sizes.
@Suite(.serialized, .blockingThreads) struct FaultAtEveryStepTests {
    static let operations: [FaultInjector.Operation] = [.write, .fsync, .truncate, .rename, .directorySync]

    /// Guards WAL invariant 2 (WriteAheadLog.swift).
    @Test(arguments: [FsyncMode.always, .interval, .never])
    func aFailureAtAnyStepLosesNoAcknowledgedRecord(_ mode: FsyncMode) throws {
        var failedSomewhere = 0
        for operation in Self.operations {
            for k in 0..<30 {
                failedSomewhere += try scenario(mode, operation, skipping: k) ? 1 : 0
            }
        }
        #expect(failedSomewhere > 20, "the injected faults hit real steps (\(failedSomewhere) runs saw a failure)")
    }

    /// Returns whether a round failed in this run.
    func scenario(_ mode: FsyncMode, _ operation: FaultInjector.Operation, skipping k: Int) throws -> Bool {
        let t = try TestWAL(segmentSize: 4 << 10, whenFull: .reject, fsync: mode)
        let pad = #"{"pad":"\#(String(repeating: "z", count: 300))"}"#
        var acked: [UInt64: String] = [:]
        var finished = Set<UInt64>()
        var sawFailure = false
        FaultInjector.shared.arm(operation, errno: EIO, skipping: k, under: t.directory)
        let reader = t.wal.reader(for: "file:a")
        for batch in 0..<12 {
            let records = (0..<4).map { record("b\(batch)-\($0)", payload: pad) }
            let (outcomes, ticket) = t.wal.append(records, nowMillis: WallClock.millis())
            if case .success = t.wait(ticket) {
                for (i, o) in outcomes.enumerated() { if case .accepted(let seq) = o { acked[seq] = records[i].id } }
            } else {
                sawFailure = true
            }
            if batch % 3 == 2 {
                let got = try reader.next(maxRecords: 6)
                t.wal.markFinished(sink: "file:a", seqs: got.map(\.seq))
                finished.formUnion(got.map(\.seq))
                try? t.wal.checkpoint()
            }
        }
        FaultInjector.shared.disarm(under: t.directory)
        let label = "\(mode) \(operation) at #\(k + 1)"
        // A SIGKILL now (the writer may still be rewriting or syncing): what is on disk holds
        // every acknowledged, unfinished record too.
        let crashed = try t.crashCopy()
        let afterCrash = Set(try readAll(crashed.wal, sink: "file:a").map(\.seq))
        let lostInCrash = acked.keys.filter { !finished.contains($0) && !afterCrash.contains($0) }
        #expect(lostInCrash.isEmpty, "\(label): a crash now would lose \(lostInCrash.sorted().prefix(5))")
        // Once the writer has stopped, the byte count equals the files' sizes.
        t.wal.shutdown()
        let onDisk = t.segmentFiles().reduce(0) { sum, name in
            sum + ((try? FileManager.default.attributesOfItem(atPath: t.directory + "/" + name)[.size] as? Int) ?? 0)
        }
        #expect(t.wal.currentStats.bytes == onDisk, "\(label): the byte count follows the files")
        try t.restart()
        let remaining = try readAll(t.wal, sink: "file:a")
        let bySeq = Dictionary(remaining.map { ($0.seq, $0.record.id) }, uniquingKeysWith: { a, _ in a })
        let missing = acked.filter { !finished.contains($0.key) && bySeq[$0.key] != $0.value }
        #expect(missing.isEmpty, "\(label): acknowledged records missing: \(missing.keys.sorted().prefix(5))")
        #expect(Set(bySeq.keys).isDisjoint(with: finished), "\(label): finished records came back")
        return sawFailure
    }
}

/// Issue 18, item 3: a connection blocked on a full WAL waits for real room for its record; the
/// old threshold (`max_size - segment_size / 16`) fired at once for records larger than that
/// margin, and the connection re-queued itself forever on its event loop.
@Suite(.blockingThreads) struct SpaceWaitTests {
    @Test func aBlockedRecordIsWokenOnlyWhenItFits() throws {
        let big = "\"" + String(repeating: "b", count: 60_000) + "\""
        let t = try TestWAL(segmentSize: 128 << 10, maxSize: 512 << 10, whenFull: .block)
        var outcomes: [AppendOutcome] = []
        var n = 0
        while !outcomes.contains(.full), n < 20 {
            outcomes += try t.append([record("big\(n)", payload: big)])
            n += 1
        }
        #expect(outcomes.last == .full)
        let frame = WriteAheadLog.frameLength(of: record("next", payload: big))
        let woken = DispatchSemaphore(value: 0)
        t.wal.whenSpaceAvailable(bytes: frame) { woken.signal() }
        #expect(woken.wait(timeout: .now() + .milliseconds(300)) == .timedOut, "no room yet: no wake-up")
        // Delivering frees whole segments; then the waiter fires, once.
        let reader = t.wal.reader(for: "file:a")
        var seqs: [UInt64] = []
        while case let b = try reader.next(maxRecords: 100), !b.isEmpty { seqs += b.map(\.seq) }
        t.wal.markFinished(sink: "file:a", seqs: seqs)
        try t.wal.checkpoint()
        #expect(woken.wait(timeout: .now() + .seconds(5)) == .success)
    }
}

/// Issue 18, item 11: state directories that others can write are refused with a message that
/// says what to do; files in them are never opened through a planted link.
@Suite(.serialized, .blockingThreads) struct StateDirectoryOwnershipTests {
    static func options(_ directory: String) -> WALOptions {
        var config = SinkdConfig()
        config.wal.directory = directory
        return WALOptions(config)
    }

    @Test func aWorldWritableWALDirectoryIsRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-wal-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        chmod(dir, 0o777)
        #expect {
            _ = try WriteAheadLog(options: Self.options(dir), logger: TestWAL.logger)
        } throws: { "\($0)".contains("lets other users write into it") }
    }

    @Test func aWALDirectoryOwnedBySomeoneElseIsRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-wal-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(chown(dir, 65534, 65534) == 0, "the test runs as root, as CI does")
        #expect {
            _ = try WriteAheadLog(options: Self.options(dir), logger: TestWAL.logger)
        } throws: { "\($0)".contains("owned by uid 65534") }
    }

    @Test func aPlantedLinkForATemporaryIsNeverFollowed() throws {
        let t = try TestWAL()
        try t.append([record("one")])
        t.wal.shutdown()
        let victim = t.directory + "-victim"
        _ = FileManager.default.createFile(atPath: victim, contents: Data("precious".utf8))
        defer { try? FileManager.default.removeItem(atPath: victim) }
        // The summary sinkd writes at the next seal goes through <id>.idx.tmp.
        let active = t.segmentFiles().last!
        try FileManager.default.createSymbolicLink(
            atPath: t.directory + "/" + active.replacingOccurrences(of: ".wal", with: ".idx.tmp"),
            withDestinationPath: victim)
        try t.open()
        try t.append([record("two")])
        try t.restart()
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "precious")
        #expect(try readAll(t.wal, sink: "file:a").count == 2)
    }
}

/// Issue 33: a segment missing from the middle of the WAL (deleted by hand, or lost by the file
/// system) while its records were outstanding: sinkd started with "WAL recovered ... records=5784"
/// and nothing else, about 3,200 acknowledged, undelivered records gone silently. Invariant 1
/// (every acknowledged record stays in a segment until finished) broken from outside is reported
/// per sink with the seqs, and counted.
@Suite(.serialized, .blockingThreads) struct MissingSegmentTests {
    /// Guards WAL invariants 1 and 4 (WriteAheadLog.swift).
    @Test func aMissingSegmentsRecordsAreReportedLostPerSink() throws {
        let t = try TestWAL(segmentSize: 64 << 10, maxSize: 16 << 20)
        let payload = #"{"pad":""# + String(repeating: "x", count: 1000) + #""}"#
        // Enough records of two sinks for several segments; sink a's first 40 handed out.
        for i in 0..<300 {
            try t.append([record("m\(i)", sink: i % 3 == 0 ? "file:b" : "file:a", payload: payload)])
        }
        #expect(try t.wal.reader(for: "file:a").next(maxRecords: 40).count == 40)
        try t.restart()  // seals the segments and writes their summaries
        let segments = t.segmentFiles()
        #expect(segments.count >= 4, "\(segments)")
        // A middle segment goes, summary and all; another leaves its summary behind.
        try FileManager.default.removeItem(atPath: t.directory + "/" + segments[0])
        try FileManager.default.removeItem(
            atPath: t.directory + "/" + segments[0].replacingOccurrences(of: ".wal", with: ".idx"))
        try FileManager.default.removeItem(atPath: t.directory + "/" + segments[2])
        try t.restart()
        let lost = t.wal.currentStats.missingRecordsLost
        #expect(lost > 0, "counted")
        #expect(t.wal.recoveryReport.missingRecords == lost)
        #expect(
            t.wal.progress(of: "file:a").outstanding.allSatisfy { seq in
                (try? readAll(t.wal, sink: "file:a").contains { $0.seq == seq }) ?? false
            }, "what stays outstanding is still readable")
        let remaining = try readAll(t.wal, sink: "file:a").count + (try readAll(t.wal, sink: "file:b").count)
        #expect(UInt64(remaining) + lost <= 300)
    }

    /// The decision as plain values: outstanding seqs outside every present segment, and what
    /// a missing segment's summary names above each sink's readUpTo.
    /// Guards WAL invariants 1 and 4 (WriteAheadLog.swift).
    @Test func whatIsLostIsFoundExactlyPerSink() {
        var progress = DeliveryProgress()
        progress.handedOut(sink: "a", seqs: [1, 2, 3, 10, 11, 12])
        progress.finished(sink: "a", seqs: [1, 2])
        var orphan = SegmentSummary()
        orphan.sinks["a"] = .init(firstSeq: 20, lastSeq: 29, records: 6, bodyBytes: 600)
        orphan.sinks["b"] = .init(firstSeq: 21, lastSeq: 28, records: 4, bodyBytes: 400)
        let losses = MissingRecords.find(progress: progress, present: [4...9, 10...11], orphanSummaries: [orphan])
        #expect(
            losses == [
                MissingRecords.Loss(sink: "a", outstanding: [3, 12], unread: 6, exact: true, firstSeq: 3, lastSeq: 29),
                MissingRecords.Loss(sink: "b", outstanding: [], unread: 4, exact: true, firstSeq: 21, lastSeq: 28),
            ])
        progress.handedOut(sink: "b", seqs: [22])
        let straddling = MissingRecords.find(progress: progress, present: [1...12, 22...22], orphanSummaries: [orphan])
        #expect(
            straddling.first { $0.sink == "b" }?.exact == false,
            "how many of b's span lie above its readUpTo is not known")
        #expect(
            MissingRecords.find(progress: progress, present: [1...40], orphanSummaries: []).isEmpty, "nothing missing")
    }
}

/// Issue 33: with both progress copies damaged (two faults at once) seqs restarted from 1 after
/// 1-11 had been handed out (each copy damaged alone held). A segment is named by the first seq it
/// holds, and the one every start opens, empty, by the next seq: the newest name is a floor too.
@Suite(.serialized, .blockingThreads) struct SeqFloorTests {
    /// Guards WAL invariant 3 (WriteAheadLog.swift).
    @Test func bothProgressCopiesDamagedDoNotReuseASeq() throws {
        let t = try TestWAL()
        let first = try t.append((1...11).map { record("f\($0)") })
        let seqs = first.compactMap { if case .accepted(let seq) = $0 { seq } else { nil } }
        #expect(seqs == Array(1...11))
        #expect(try t.wal.reader(for: "file:a").next(maxRecords: 20).count == 11)
        t.wal.markFinished(sink: "file:a", seqs: seqs)
        try t.wal.checkpoint()
        try t.restart()  // the finished segment is deleted at recovery
        #expect(
            t.segmentFiles() == [SegmentFormat.fileName(id: 12)],
            "the new active segment, empty, named by the next seq: \(t.segmentFiles())")
        t.wal.shutdown()
        for name in ["progress.0", "progress.1"] {
            try Data(repeating: 0xAB, count: 4096).write(to: URL(fileURLWithPath: t.directory + "/" + name))
        }
        try t.open()
        let next = try t.append([record("after")])
        #expect(next == [.accepted(seq: 12)], "no seq reused: \(next)")
    }
}
