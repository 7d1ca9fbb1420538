#if canImport(Glibc)
import Glibc
#endif
import Logging
import Metrics
import SinkdCore

// # The writer thread
//
// Takes the pending round, writes it into the active segment (rolling over as needed), syncs it
// per `fsync`, reports it.
//
// ## Failures
// A write, fdatasync, rollover or segment creation can fail at any step (ENOSPC, EIO, ...).
// What holds afterwards, in every mode:
// - No record already reported durable is removed by sinkd. Only the failed round's own frames
//   are cut from the active segment (it is cut back to `activeRoundStart`), and the segment is
//   closed: writing goes on in a fresh file, whose header is synced before use.
// - `fsync: interval`: the frames reported durable since the last successful fdatasync may have
//   been dropped from the page cache by the failed sync (Linux marks them clean: the PostgreSQL
//   "fsyncgate" lesson), so the writer keeps its own copy of them (`unsynced`). After a failure
//   the copy is written again into the fresh segment and synced before any new round; only then
//   is the old segment cut back to its last synced size. Until that rewrite succeeds nothing new
//   is written, and the records stay readable from the old segment. Logged with the seq range,
//   counted (`sinkd_wal_rewritten_records_total`).
// - `fsync: never`: no copy is kept (it would be a segment's worth); a failed fdatasync at a
//   rollover is logged with the seq range at risk and counted (`sinkd_wal_records_at_risk_total`).
// - Records of the failed round that a rollover already sealed (synced) stay: they are durable,
//   stay in the dedupe table, and a client that resends one is answered `duplicate`. The rest of
//   the round leaves the dedupe table and the byte count, and is answered with an error.
// - `when_full: block` and ENOSPC: the round is kept and written again after a backoff (at most
//   1 s), with no system call in progress meanwhile (the watchdog measures only those); appends
//   wait behind `pendingBudget`. The state is reported (`diskFullSinceMillis`, logged once when it
//   starts and once when it ends). `closeAppends()` or `shutdown()` ends the wait: the round fails.
extension WriteAheadLog {
    func writerLoop() {
        var backoffMillis = 0
        var held: Round?
        while true {
            // A rewrite after a failure comes before any new round.
            if !rewrite.entries.isEmpty {
                do throws(FileError) {
                    try performRewrite()
                } catch {
                    handleFailure(error)
                    // Nothing new can be written before it: clients wait only where they would
                    // for a full disk; otherwise what is pending is answered with the error.
                    let hold =
                        options.whenFull == .block && error.isNoSpace && lock.withLock({ !stopping && !appendsClosed })
                    if hold { markDiskFull(error) } else { failPendingRound(error) }
                    if lock.withLock({ stopping }) { break }
                    _ = waitBeforeRetry(&backoffMillis)
                    continue
                }
            }
            let next: Round?
            if let round = held {
                next = round
                held = nil
            } else {
                next = lock.withLock {
                    while pending.entries.isEmpty && pending.callbacks.isEmpty && !stopping && !intervalSyncDue() {
                        if options.fsync == .interval && dirtySinceSync {
                            lock.wait(nanoseconds: Int(options.fsyncInterval.milliseconds) * 1_000_000)
                        } else {
                            lock.wait()
                        }
                    }
                    if pending.entries.isEmpty && pending.callbacks.isEmpty {
                        return nil
                    }
                    var round = openRound()
                    swap(&round, &pending)
                    writing = round
                    return round
                }
            }
            guard var round = next else {
                if options.fsync == .interval && dirtySinceSync {
                    do throws(FileError) {
                        try syncActive()
                    } catch {
                        handleFailure(error)
                    }
                    if !lock.withLock({ stopping }) { continue }
                }
                break  // stopping with nothing pending
            }
            lock.withLock { stats.writingSinceNanos = UInt64(MonotonicClock.nanos()) }
            do throws(FileError) {
                try write(&round)
                backoffMillis = 0
                finish(&round, result: .success(()))
            } catch {
                handleFailure(error, round: &round)
                let retry =
                    options.whenFull == .block && error.isNoSpace && lock.withLock({ !stopping && !appendsClosed })
                if retry {
                    markDiskFull(error)
                    held = round
                    if !waitBeforeRetry(&backoffMillis) {
                        held = nil
                        finish(&round, result: .failure(WALWriteError(underlying: error)))
                    }
                    continue
                }
                finish(&round, result: .failure(WALWriteError(underlying: error)))
            }
        }
        drainForShutdown()
    }

    /// Waits the next backoff step (50 ms doubling to 1 s) with no system call in progress, so the
    /// watchdog keeps pinging; `closeAppends()` and `shutdown()` wake it. Returns false when
    /// stopping or ingest closed: give up holding a round.
    private func waitBeforeRetry(_ backoffMillis: inout Int) -> Bool {
        backoffMillis = min(max(backoffMillis * 2, 50), 1000)
        let wait = backoffMillis
        return lock.withLock {
            stats.writingSinceNanos = 0
            if stopping { return false }
            if !appendsClosed { lock.wait(nanoseconds: wait * 1_000_000) }
            return !stopping && !appendsClosed
        }
    }

    /// Answers the pending round with `error` without writing it.
    private func failPendingRound(_ error: FileError) {
        if var round = takePendingRound() { finish(&round, result: .failure(WALWriteError(underlying: error))) }
    }

    /// The pending round, now being written (nil when nothing is pending); a new one is opened.
    private func takePendingRound() -> Round? {
        lock.withLock {
            guard !pending.entries.isEmpty || !pending.callbacks.isEmpty else { return nil }
            var round = openRound()
            swap(&round, &pending)
            writing = round
            return round
        }
    }

    /// The next pending round, in the buffers a finished round left (issue 30: three heap calls
    /// per round at Conductor's pace, where every record is a round). Under `lock`, on the
    /// writer's thread.
    private func openRound() -> Round {
        Round(
            number: pending.number + 1, frames: takeSpare(&spareFrames), entries: takeSpare(&spareEntries),
            callbacks: takeSpare(&spareCallbacks))
    }

    /// Frame buffers of written rounds are used again by the next rounds: a new round's buffer
    /// then neither grows by copying itself nor touches fresh pages. One is kept, of at most
    /// `maxSpareFrameBytes` (a burst's larger buffer is freed).
    static let maxSpareFrameBytes = 8 << 20
    /// The most entries (or callbacks, or data watches) a kept array may hold room for.
    static let maxSpareEntries = 1 << 16

    private func markDiskFull(_ error: FileError) {
        let first: Bool = lock.withLock {
            guard stats.diskFullSinceMillis == 0 else { return false }
            stats.diskFullSinceMillis = WallClock.millis()
            return true
        }
        if first {
            logger.error(
                "the disk holding the WAL is full: records are held (and clients wait) until space returns",
                metadata: [
                    "directory": "\(directory)", "error": "\(error)",
                    "held_bytes": "\(lock.withLock { reservedBytes })",
                ])
        }
    }

    private func clearDiskFull() {
        let since: UInt64 = lock.withLock {
            defer { stats.diskFullSinceMillis = 0 }
            return stats.diskFullSinceMillis
        }
        if since > 0 {
            let seconds = Double(WallClock.millis() - min(since, WallClock.millis())) / 1000
            logger.notice(
                "the WAL can write again", metadata: ["directory": "\(directory)", "full_for_seconds": "\(seconds)"])
        }
    }

    private func intervalSyncDue() -> Bool {
        options.fsync == .interval && dirtySinceSync
            && (ContinuousClock.now - lastSync >= options.fsyncInterval
                || unsynced.frames.count >= options.pendingBudget)
    }

    /// Writes the round's frames (from `durableEntries` on) into the active segment, rotating as
    /// needed, and syncs per `fsync`. Keeps `round.durableEntries` and `writtenEntries` current so
    /// that a failure knows exactly which frames are where.
    private func write(_ round: inout Round) throws(FileError) {
        round.writtenEntries = round.durableEntries
        guard round.durableEntries < round.entries.count else { return }
        if activeFD < 0 {
            try openNewActiveSegment(id: round.entries[round.durableEntries].seq)
        }
        activeRoundStart = activeSize
        var index = round.durableEntries
        while index < round.entries.count {
            // The run of frames that fits in the active segment.
            var end = index
            var bytes = 0
            while end < round.entries.count, activeSize + bytes + round.entries[end].frameLength <= options.segmentSize
            {
                bytes += round.entries[end].frameLength
                end += 1
            }
            if end == index {
                // The next frame does not fit: seal this segment and start another.
                if activeSize > SegmentFormat.headerSize {
                    try sealActive()
                    round.durableEntries = index  // what the sealed segment holds is synced
                    try openNewActiveSegment(id: round.entries[index].seq)
                    activeRoundStart = activeSize
                    continue
                }
                end = index + 1  // a frame larger than a segment gets a segment of its own
                bytes = round.entries[index].frameLength
            }
            let start = round.entries[index].frameOffset
            try FileIO.writeAll(activeFD, round.frames, range: start..<(start + bytes), path: activePath)
            var offset = activeSize
            for e in round.entries[index..<end] {
                offset += e.frameLength
                activeEntries.append(ActiveEntry(e, end: offset))
            }
            activeSize += bytes
            let added = round.entries[index..<end]
            lock.withLock {
                // In place: a copy of the segment (`var s = segments[last]`) shared its summary's
                // table of sinks with the array, so the first add copied the whole table, once
                // per round: per record at Conductor's pace, ~6 KB with 50 sinks.
                let last = segments.count - 1
                for e in added {
                    segments[last].summary.add(
                        seq: e.seq, sink: e.sink, bodyBytes: e.frameLength - SegmentFormat.frameHeaderSize,
                        acceptedAtMillis: e.acceptedAtMillis)
                    backlogTracker.appended(sink: e.sink, seq: e.seq, acceptedAtMillis: e.acceptedAtMillis)
                }
                segments[last].summary.fileSize = UInt64(activeSize)
                segments[last].fileBytes += bytes
                diskBytes += bytes
                reservedBytes -= bytes
            }
            index = end
            round.writtenEntries = end
            dirtySinceSync = true
        }
        if options.fsync == .always {
            try syncActive()
        }
        // Written (and per `fsync` reported durable): a failure from here on, outside a round
        // (an interval sync, a seal at shutdown), must keep all of it.
        activeRoundStart = activeSize
    }

    func syncActive() throws(FileError) {
        guard dirtySinceSync, activeFD >= 0 else { return }
        let started = ContinuousClock.now
        lock.withLock { if stats.writingSinceNanos == 0 { stats.writingSinceNanos = UInt64(MonotonicClock.nanos()) } }
        try FileIO.dataSync(activeFD, path: activePath)
        let elapsed = ContinuousClock.now - started
        WALMetrics.fsync.recordNanoseconds(Int64(elapsed.nanoseconds))
        lastSync = ContinuousClock.now
        dirtySinceSync = false
        activeDurableSize = activeSize
        unsynced.removeAll()
        lock.withLock {
            stats.fsyncs += 1
            stats.fsyncNanosTotal += elapsed.nanoseconds
            if options.fsync == .interval {
                segments[segments.count - 1].visibleSize = activeSize
            }
        }
    }

    /// Reports a round: readers may see it, callbacks run, failed seqs leave the dedupe table.
    private func finish(_ round: inout Round, result: Result<Void, WALWriteError>) {
        if case .success = result {
            clearDiskFull()
            if options.fsync == .interval, dirtySinceSync {
                // Reported durable now, synced later: keep a copy until then.
                unsynced.append(round, from: round.durableEntries)
            }
        }
        var (callbacks, failedEarlier, waiters, space):
            (
                [(ClosedRange<UInt64>, DurableCallback)], WALWriteError?,
                [@Sendable () -> Void], [@Sendable () -> Void]
            ) = lock.withLock {
                let keep: Int
                switch result {
                case .success:
                    keep = round.entries.count
                    if activeFD >= 0, !segments.isEmpty { segments[segments.count - 1].visibleSize = activeSize }
                case .failure(let error):
                    keep = round.durableEntries
                    lastFailure = error
                    recordFailure(round: round.number)
                    stats.failedRounds += 1
                    // handleFailure put the frames it cut back among the reserved: none of these is
                    // in a file now.
                    for e in round.entries[keep...] {
                        dedupe.remove(e.key, seq: e.seq)
                        reservedBytes -= e.frameLength
                    }
                }
                var waiters = takeSpare(&spareWaiters)
                if keep > 0 {
                    stats.durableSeq = max(stats.durableSeq, round.entries[keep - 1].seq)
                    var last: String?
                    var unwatched = false
                    for e in round.entries[..<keep] where e.sink != last {  // a round is mostly one sink's records after another's
                        newSinks.insert(e.sink)
                        last = e.sink
                        if let watch = dataWatches[e.sink] {
                            if watch.armed {
                                watch.armed = false
                                waiters.append(watch.callback)
                            }
                        } else {
                            unwatched = true
                        }
                    }
                    if unwatched, !unwatchedWaiters.isEmpty {
                        waiters += unwatchedWaiters
                        unwatchedWaiters.removeAll()
                    }
                }
                // Callbacks registered while the round was being written went to `writing`.
                let callbacks = writing?.number == round.number ? writing!.callbacks : round.callbacks
                completedRound = round.number
                writing = nil
                round.callbacks = []  // `callbacks` holds the only reference: kept after they ran
                stats.lastProgressNanos = UInt64(MonotonicClock.nanos())
                stats.writingSinceNanos = 0
                if case .success = result {
                    keepForReuse(&round.frames, as: &spareFrames, maxCapacity: Self.maxSpareFrameBytes)
                }
                keepForReuse(&round.entries, as: &spareEntries, maxCapacity: Self.maxSpareEntries)
                // A ticket spanning an earlier round that failed fails too. Decided here, under
                // the one lock: the loops these callbacks wake take the lock at once.
                let failedEarlier = failedRanges.isEmpty ? nil : lastFailure
                return (callbacks, failedEarlier, waiters, takeSpaceWaiters())
            }
        for (rounds, callback) in callbacks {
            if case .success = result, let failedEarlier, lock.withLock({ anyFailed(rounds) }) {
                callback(.failure(failedEarlier))
            } else {
                callback(result)
            }
        }
        keepForReuse(&callbacks, as: &spareCallbacks, maxCapacity: Self.maxSpareEntries)
        for w in waiters { w() }
        keepForReuse(&waiters, as: &spareWaiters, maxCapacity: Self.maxSpareEntries)
        for w in space { w() }
    }

    /// After a failed write, sync, rollover or rewrite: cut the failed round's frames off the
    /// active segment, close it, and queue a rewrite of what was reported durable but is not
    /// synced (interval). `round`'s entries that were cut go back to being reserved, so that a
    /// retry or `finish` accounts for them exactly.
    private func handleFailure(_ error: FileError, round: inout Round) {
        // Frames of the round written into the active segment by this attempt are cut below.
        let cut = round.entries[round.durableEntries..<round.writtenEntries]
        let bytes = cut.reduce(0) { $0 + $1.frameLength }
        lock.withLock { reservedBytes += bytes }
        round.writtenEntries = round.durableEntries
        handleFailure(error, records: round.entries.count - round.durableEntries)
    }

    private func handleFailure(_ error: FileError, records: Int = 0) {
        lock.withLock {
            stats.writeFailures += 1
            stats.writingSinceNanos = 0
        }
        WALMetrics.writeFailures.increment()
        failureLog.log(
            logger, key: "\(error.operation) \(error.errno)",
            "a WAL write or fdatasync failed; no record of the failed round is acknowledged",
            metadata: [
                "error": "\(error)", "records": "\(records)",
            ])
        guard activeFD >= 0 else { return }
        let keep = activeRoundStart
        var truncated = true
        do throws(FileError) {
            try FileIO.truncate(activeFD, to: keep, path: activePath)
        } catch {
            truncated = false
            logger.error(
                "could not cut a failed round off the WAL segment; a restart scans it (its frames may then be delivered though they were answered with an error)",
                metadata: [
                    "segment": "\(activePath)", "error": "\(error)",
                ])
        }
        let kept = activeEntries.prefix { $0.end <= keep }
        activeEntries.removeAll()
        if options.fsync == .interval, !unsynced.entries.isEmpty {
            let first = unsynced.entries.first!.seq, last = unsynced.entries.last!.seq
            logger.error(
                "records reported durable were not synced when the WAL failed; writing them again from sinkd's copy into a new segment",
                metadata: [
                    "segment": "\(activePath)", "first_seq": "\(first)", "last_seq": "\(last)",
                    "records": "\(unsynced.entries.count)",
                ])
            let id = lock.withLock { segments[segments.count - 1].id }
            // The records stay readable from here until the rewrite is synced; then this segment
            // is cut back to what its last successful fdatasync covered.
            cutAfterRewrite = (id, activeDurableSize, kept.filter { $0.end <= activeDurableSize })
            rewrite.append(unsynced)
            unsynced.removeAll()
        } else if options.fsync == .never, keep > SegmentFormat.headerSize {
            do throws(FileError) {
                try FileIO.dataSync(activeFD, path: activePath)
            } catch {
                reportAtRisk(Array(kept), error: error)
            }
        }
        close(activeFD)
        activeFD = -1
        dirtySinceSync = false
        let summary = SegmentSummary(entries: kept)
        lock.withLock {
            var s = segments[segments.count - 1]
            s.summary = summary
            s.summary.fileSize = UInt64(keep)
            s.visibleSize = keep
            s.sealed = true
            if truncated {
                diskBytes -= s.fileBytes - keep
                s.fileBytes = keep
            }
            segments[segments.count - 1] = s
        }
        // No summary file: a restart scans this segment (it may hold what the truncate missed).
    }

    /// Records reported durable whose fdatasync failed with no copy to write again.
    private func reportAtRisk(_ entries: [ActiveEntry], error: FileError) {
        guard let first = entries.first?.seq, let last = entries.last?.seq else { return }
        lock.withLock { stats.recordsAtRisk += UInt64(entries.count) }
        WALMetrics.recordsAtRisk.increment(by: entries.count)
        logger.critical(
            "fdatasync failed for records already reported durable (fsync: never): they survive a sinkd crash but may not survive a power loss",
            metadata: [
                "segment": "\(activePath)", "first_seq": "\(first)", "last_seq": "\(last)",
                "records": "\(entries.count)", "error": "\(error)",
            ])
    }

    /// One attempt, at shutdown, at `performRewrite`. Returns false when it failed: the records
    /// stay in their old segment, unsynced, counted at risk and logged.
    @discardableResult
    private func rewriteOnceAtShutdown() -> Bool {
        guard !rewrite.entries.isEmpty else { return true }
        do throws(FileError) {
            try performRewrite()
            return true
        } catch {
            handleFailure(error)
            let count = rewrite.entries.count
            lock.withLock { stats.recordsAtRisk += UInt64(count) }
            WALMetrics.recordsAtRisk.increment(by: count)
            logger.critical(
                "could not write again, at shutdown, records reported durable whose fdatasync failed; they stay in their old segment, unsynced",
                metadata: [
                    "first_seq": "\(rewrite.entries.first!.seq)", "last_seq": "\(rewrite.entries.last!.seq)",
                    "records": "\(count)", "error": "\(error)",
                ])
            return false
        }
    }

    /// Writes `rewrite` into a fresh segment and syncs it; then cuts the segment it came from back
    /// to what was synced there.
    private func performRewrite() throws(FileError) {
        if activeFD < 0 || activeSize > SegmentFormat.headerSize {
            if activeFD >= 0 { try sealActive() }
            try openNewActiveSegment(id: rewrite.entries[0].seq)
        }
        lock.withLock { stats.writingSinceNanos = UInt64(MonotonicClock.nanos()) }
        try FileIO.writeAll(activeFD, rewrite.frames, path: activePath)
        var offset = activeSize
        var added: [ActiveEntry] = []
        for e in rewrite.entries {
            offset += e.frameLength
            added.append(ActiveEntry(e, end: offset))
        }
        activeSize = offset
        dirtySinceSync = true
        activeRoundStart = activeSize
        let bytes = rewrite.frames.count
        lock.withLock {
            var s = segments[segments.count - 1]
            for e in rewrite.entries {
                s.summary.add(
                    seq: e.seq, sink: e.sink, bodyBytes: e.frameLength - SegmentFormat.frameHeaderSize,
                    acceptedAtMillis: e.acceptedAtMillis)
                backlogTracker.appended(sink: e.sink, seq: e.seq, acceptedAtMillis: e.acceptedAtMillis)
            }
            s.summary.fileSize = UInt64(activeSize)
            s.fileBytes += bytes
            diskBytes += bytes
            segments[segments.count - 1] = s
        }
        activeEntries += added
        try syncActive()
        let count = rewrite.entries.count
        lock.withLock {
            segments[segments.count - 1].visibleSize = activeSize
            stats.rewrittenRecords += UInt64(count)
            stats.writingSinceNanos = 0
        }
        WALMetrics.rewritten.increment(by: count)
        logger.notice(
            "records reported durable before a WAL failure are synced again in a new segment",
            metadata: [
                "segment": "\(activePath)", "first_seq": "\(rewrite.entries.first!.seq)",
                "last_seq": "\(rewrite.entries.last!.seq)", "records": "\(count)",
            ])
        rewrite.removeAll()
        if let cut = cutAfterRewrite {
            cutAfterRewrite = nil
            cutBack(cut)
        }
    }

    /// Cuts a closed segment back to `size`: its frames after it were written again elsewhere.
    private func cutBack(_ cut: (id: UInt64, size: Int, keep: [ActiveEntry])) {
        let file = path(SegmentFormat.fileName(id: cut.id))
        do throws(FileError) {
            let fd = try FileIO.open(file, O_WRONLY | O_NOFOLLOW)
            defer { close(fd) }
            try FileIO.truncate(fd, to: cut.size, path: file)
            try FileIO.dataSync(fd, path: file)
        } catch  where error.errno == ENOENT {
            return  // every record in it was finished and the segment deleted meanwhile
        } catch {
            // Its copies of the rewritten seqs stay; readers skip a seq they have passed, so
            // they are delivered once. A restart rescans it (it has no summary).
            logger.warning(
                "could not cut a WAL segment back after rewriting its unsynced records",
                metadata: ["segment": "\(file)", "error": "\(error)"])
            return
        }
        let summary = SegmentSummary(entries: cut.keep)
        lock.withLock {
            guard let i = segments.firstIndex(where: { $0.id == cut.id }) else { return }
            segments[i].summary = summary
            segments[i].summary.fileSize = UInt64(cut.size)
            segments[i].visibleSize = cut.size
            diskBytes -= segments[i].fileBytes - cut.size
            segments[i].fileBytes = cut.size
        }
    }

    /// Makes the active segment durable and writes its summary beside it. Only the sync can
    /// fail: the summary is an optimisation (without it the next start scans the segment), so a
    /// full disk never stops a rollover that the data itself fits.
    func sealActive() throws(FileError) {
        if dirtySinceSync || options.fsync != .never {
            try syncActive()
        }
        let (summary, id) = lock.withLock { (segments[segments.count - 1].summary, segments[segments.count - 1].id) }
        let bytes = summary.encode(entries: activeEntries)
        do throws(FileError) {
            try FileIO.replaceAtomically(path(SegmentFormat.summaryFileName(id: id)), with: bytes, directory: directory)
        } catch {
            failureLog.log(
                logger, key: "summary",
                "could not write a WAL segment's summary; the next start scans the segment instead",
                metadata: ["segment": "\(activePath)", "error": "\(error)"])
        }
        close(activeFD)
        activeFD = -1
        activeEntries.removeAll(keepingCapacity: true)
        lock.withLock {
            segments[segments.count - 1].sealed = true
            segments[segments.count - 1].visibleSize = activeSize
        }
    }

    /// Creates the next segment file (header written and synced, directory synced).
    /// At start: the newest segment, when it holds nothing and is named by the next seq (the one
    /// the previous start opened; kept while empty: its name is the seq floor), becomes the active
    /// segment again instead of a new one beside it, so names stay the first seq a segment holds.
    func reopenEmptyNewestSegment() throws(FileError) -> Bool {
        let candidate: Segment? = lock.withLock {
            guard let last = segments.last, last.summary.records == 0, last.id == nextSeq,
                last.fileBytes == SegmentFormat.headerSize
            else { return nil }
            return last
        }
        guard let segment = candidate else { return false }
        let name = SegmentFormat.fileName(id: segment.id)
        let file = path(name)
        let fd = try FileIO.open(file, O_WRONLY | O_APPEND | O_NOFOLLOW)
        // Its summary described it sealed; it is written again when it is sealed again.
        do throws(FileError) {
            try FileIO.unlink(path(SegmentFormat.summaryFileName(id: segment.id)))
        } catch {
            close(fd)
            throw error
        }
        becomeActive(fd: fd, file: file, id: segment.id, replacingNewest: true)
        return true
    }

    /// `fd` (a segment holding only its header) is where appends go now.
    private func becomeActive(fd: CInt, file: String, id: UInt64, replacingNewest: Bool) {
        activeFD = fd
        activePath = file
        activeSize = SegmentFormat.headerSize
        activeDurableSize = activeSize
        activeRoundStart = activeSize
        activeEntries.removeAll(keepingCapacity: true)
        dirtySinceSync = false
        lock.withLock {
            var summary = SegmentSummary()
            summary.fileSize = UInt64(SegmentFormat.headerSize)
            let segment = Segment(
                id: id, summary: summary, visibleSize: SegmentFormat.headerSize, sealed: false,
                fileBytes: SegmentFormat.headerSize)
            if replacingNewest {
                segments[segments.count - 1] = segment
            } else {
                segments.append(segment)
                diskBytes += SegmentFormat.headerSize
            }
        }
    }

    func openNewActiveSegment(id explicitID: UInt64? = nil) throws(FileError) {
        // Ids (and so file names) grow strictly, whatever seq the caller suggests.
        let id = lock.withLock { max(explicitID ?? nextSeq, (segments.last?.id ?? 0) + 1) }
        let name = SegmentFormat.fileName(id: id)
        let file = path(name)
        // A leftover from an earlier failed attempt with the same id holds no durable record.
        try FileIO.unlink(file)
        let fd = try FileIO.open(file, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_NOFOLLOW)
        do throws(FileError) {
            let header = SegmentFormat.header()
            try FileIO.writeAll(fd, header, path: file)
            try FileIO.dataSync(fd, path: file)
            try FileIO.syncDirectory(directory)
        } catch {
            close(fd)
            _ = Glibc.unlink(file)
            throw error
        }
        becomeActive(fd: fd, file: file, id: id, replacingNewest: false)
    }

    /// Shutdown: everything appended is written (one attempt); the active segment is sealed;
    /// progress saved. Never waits for disk space.
    func drainForShutdown() {
        rewriteOnceAtShutdown()
        if var round = takePendingRound() {
            do throws(FileError) {
                try write(&round)
                finish(&round, result: .success(()))
            } catch {
                handleFailure(error, round: &round)
                finish(&round, result: .failure(WALWriteError(underlying: error)))
            }
        }
        guard activeFD >= 0 else { return lock.withLock { stopped = true } }
        do throws(FileError) {
            try sealActive()
        } catch {
            // The last sync failed: what was reported durable and not synced is written again
            // (interval), once; a restart scans whatever is left.
            handleFailure(error)
            if rewriteOnceAtShutdown(), activeFD >= 0 {
                do throws(FileError) { try sealActive() } catch { handleFailure(error) }
            }
        }
        lock.withLock { stopped = true }
    }
}
