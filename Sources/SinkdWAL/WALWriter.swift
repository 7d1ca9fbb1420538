#if canImport(Glibc)
import Glibc
#endif
import Logging
import Metrics

/// The writer thread: takes the pending round, writes it, syncs it, reports it.
extension WriteAheadLog {
    func writerLoop() {
        var retryDelayMillis = 0
        while true {
            let next: Round? = lock.withLock {
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
                var round = Round(number: pending.number + 1)
                swap(&round, &pending)
                writing = round
                stats.writingSinceNanos = UInt64(MonotonicClock.nanos())
                return round
            }
            guard var round = next else {
                if intervalSyncDueUnlocked() {
                    try? syncActive()
                    continue
                }
                // Stopping with nothing pending.
                break
            }
            while true {
                do throws(FileError) {
                    try write(round)
                    retryDelayMillis = 0
                    finish(&round, result: .success(()))
                    break
                } catch {
                    let walError = WALWriteError(underlying: error)
                    logger.error("WAL write failed; no record of this round is acknowledged", metadata: [
                        "error": "\(error)", "records": "\(round.entries.count)",
                    ])
                    recoverAfterWriteFailure()
                    let retry = options.whenFull == .block && walError.isNoSpace && !lock.withLock({ stopping })
                    if retry {
                        // Behave like a full WAL: hold the round (clients wait, nothing is acknowledged) and retry.
                        retryDelayMillis = min(max(retryDelayMillis * 2, 50), 1000)
                        usleep(useconds_t(retryDelayMillis * 1000))
                        continue
                    }
                    finish(&round, result: .failure(walError))
                    break
                }
            }
        }
        drainForShutdown()
    }

    private func intervalSyncDue() -> Bool {
        options.fsync == .interval && dirtySinceSync && ContinuousClock.now - lastSync >= options.fsyncInterval
    }

    private func intervalSyncDueUnlocked() -> Bool {
        options.fsync == .interval && dirtySinceSync
    }

    /// Writes the round's frames into the active segment (rotating as needed) and syncs per `fsync`.
    private func write(_ round: Round) throws(FileError) {
        if activeFD < 0, let first = round.entries.first {
            try openNewActiveSegment(id: first.seq)
        }
        var index = 0
        while index < round.entries.count {
            // The run of frames that fits in the active segment.
            var end = index
            var bytes = 0
            while end < round.entries.count, activeSize + bytes + round.entries[end].frameLength <= options.segmentSize {
                bytes += round.entries[end].frameLength
                end += 1
            }
            if end == index {
                // The next frame does not fit: seal this segment and start another.
                if activeSize > SegmentFormat.headerSize {
                    try sealActive()
                    try openNewActiveSegment(id: round.entries[index].seq)
                    continue
                }
                end = index + 1  // a frame larger than a segment gets a segment of its own
                bytes = round.entries[index].frameLength
            }
            let start = round.entries[index].frameOffset
            try FileIO.writeAll(activeFD, round.frames, range: start..<(start + bytes), path: activePath)
            activeSize += bytes
            for e in round.entries[index..<end] { activeKeys.append((e.key, e.seq)) }
            lock.withLock {
                var s = segments[segments.count - 1]
                for e in round.entries[index..<end] {
                    s.summary.add(seq: e.seq, sink: e.sink, bodyBytes: e.frameLength - SegmentFormat.frameHeaderSize, acceptedAtMillis: e.acceptedAtMillis)
                }
                s.summary.fileSize = UInt64(activeSize)
                segments[segments.count - 1] = s
            }
            index = end
            dirtySinceSync = true
        }
        if options.fsync == .always {
            try syncActive()
        }
    }

    func syncActive() throws(FileError) {
        guard dirtySinceSync else { return }
        let started = ContinuousClock.now
        try FileIO.dataSync(activeFD, path: activePath)
        let elapsed = ContinuousClock.now - started
        WALMetrics.fsync.recordNanoseconds(Int64(elapsed.nanoseconds))
        lastSync = ContinuousClock.now
        dirtySinceSync = false
        activeDurableSize = activeSize
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
        let (callbacks, waiters): ([(ClosedRange<UInt64>, @Sendable (Result<Void, WALWriteError>) -> Void)], [@Sendable () -> Void]) = lock.withLock {
            switch result {
            case .success:
                if let last = round.entries.last?.seq {
                    stats.durableSeq = last
                    segments[segments.count - 1].visibleSize = activeSize
                }
                for e in round.entries { newSinks.insert(e.sink) }
            case .failure(let error):
                lastFailure = error
                failedRounds.append(round.number)
                if failedRounds.count > 64 { failedRounds.removeFirst() }
                stats.failedRounds += 1
                for e in round.entries {
                    dedupe.remove(e.key, seq: e.seq)
                    totalBytes -= e.frameLength
                }
            }
            // Callbacks registered while the round was being written went to `writing`.
            let callbacks = writing?.number == round.number ? writing!.callbacks : round.callbacks
            completedRound = round.number
            writing = nil
            stats.lastProgressNanos = UInt64(MonotonicClock.nanos())
            stats.writingSinceNanos = 0
            let waiters = round.entries.isEmpty || result.isFailure ? [] : dataWaiters
            if !waiters.isEmpty { dataWaiters.removeAll() }
            return (callbacks, waiters)
        }
        for (rounds, callback) in callbacks {
            let failedEarlier = lock.withLock { failedRounds.contains(where: { rounds.contains($0) && $0 != round.number }) }
            if case .success = result, failedEarlier {
                callback(.failure(lock.withLock { lastFailure! }))
            } else {
                callback(result)
            }
        }
        for w in waiters { w() }
    }

    /// After a failed write or sync: cut the segment back to what was durable and seal it, so
    /// the next round starts on a fresh file (invariant 2).
    private func recoverAfterWriteFailure() {
        guard activeFD >= 0 else { return }
        do {
            try FileIO.truncate(activeFD, to: activeDurableSize, path: activePath)
            activeSize = activeDurableSize
            // The keys and summary of frames that did not survive must go.
            let keep = lock.withLock { stats.durableSeq }
            activeKeys.removeAll { $0.1 > keep }
            lock.withLock {
                var s = segments[segments.count - 1]
                s.summary = rebuiltSummary(s.summary, keepingThrough: keep)
                s.summary.fileSize = UInt64(activeSize)
                s.visibleSize = activeSize
                segments[segments.count - 1] = s
            }
            dirtySinceSync = true
            try sealActive()
            try openNewActiveSegment(id: lock.withLock { nextSeq })
        } catch {
            logger.error("could not reopen the WAL after a failed write; will retry on the next round", metadata: ["error": "\(error)"])
        }
    }

    /// A summary without the records above `seq` (their frames were cut off). Per-sink spans are
    /// recomputed only roughly (their last seq is clamped), which errs towards keeping segments.
    private func rebuiltSummary(_ s: SegmentSummary, keepingThrough seq: UInt64) -> SegmentSummary {
        var out = s
        if out.lastSeq > seq { out.lastSeq = max(out.firstSeq, seq) }
        out.sinks = out.sinks.compactMapValues { span in
            if span.firstSeq > seq { return nil }
            var span = span
            span.lastSeq = min(span.lastSeq, seq)
            return span
        }
        return out
    }

    /// Makes the active segment durable and writes its summary beside it.
    func sealActive() throws(FileError) {
        if dirtySinceSync || options.fsync != .never {
            try syncActive()
        }
        let summary = lock.withLock { segments[segments.count - 1].summary }
        let bytes = summary.encode(keys: activeKeys)
        let id = lock.withLock { segments[segments.count - 1].id }
        try FileIO.replaceAtomically(path(SegmentFormat.summaryFileName(id: id)), with: bytes, directory: directory)
        close(activeFD)
        activeFD = -1
        activeKeys.removeAll(keepingCapacity: true)
        lock.withLock {
            segments[segments.count - 1].sealed = true
            segments[segments.count - 1].visibleSize = activeSize
        }
    }

    /// Creates the next segment file (header written and synced, directory synced).
    func openNewActiveSegment(id explicitID: UInt64? = nil) throws(FileError) {
        // Ids (and so file names) grow strictly, whatever seq the caller suggests.
        let id = lock.withLock { max(explicitID ?? nextSeq, (segments.last?.id ?? 0) + 1) }
        let name = SegmentFormat.fileName(id: id)
        let file = path(name)
        // A leftover from an earlier failed attempt with the same id holds no durable record.
        try FileIO.unlink(file)
        let fd = try FileIO.open(file, O_WRONLY | O_CREAT | O_EXCL | O_APPEND)
        do throws(FileError) {
            let header = SegmentFormat.header()
            try FileIO.writeAll(fd, header, path: file)
            try FileIO.dataSync(fd, path: file)
            try FileIO.syncDirectory(directory)
        } catch {
            close(fd)
            throw error
        }
        activeFD = fd
        activePath = file
        activeSize = SegmentFormat.headerSize
        activeDurableSize = activeSize
        dirtySinceSync = false
        lock.withLock {
            var summary = SegmentSummary()
            summary.fileSize = UInt64(SegmentFormat.headerSize)
            segments.append(Segment(id: id, summary: summary, visibleSize: SegmentFormat.headerSize, sealed: false))
            totalBytes += SegmentFormat.headerSize
        }
    }

    /// Shutdown: everything appended is written; the active segment is sealed; progress saved.
    func drainForShutdown() {
        let leftover: Round? = lock.withLock {
            guard !pending.entries.isEmpty || !pending.callbacks.isEmpty else { return nil }
            var round = Round(number: pending.number + 1)
            swap(&round, &pending)
            writing = round
            return round
        }
        if var round = leftover {
            do throws(FileError) {
                try write(round)
                finish(&round, result: .success(()))
            } catch {
                finish(&round, result: .failure(WALWriteError(underlying: error)))
            }
        }
        if activeFD >= 0 {
            do {
                try sealActive()
            } catch {
                logger.error("could not seal the last WAL segment at shutdown; the next start will scan it", metadata: ["error": "\(error)"])
            }
        }
        lock.withLock { stopped = true }
    }
}

extension Result {
    var isFailure: Bool {
        if case .failure = self { return true }
        return false
    }
}

public enum MonotonicClock {
    public static func nanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

extension Duration {
    var nanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
    }
}

enum WALMetrics {
    static let fsync = Metrics.Timer(label: "sinkd_wal_fsync_seconds")
}
