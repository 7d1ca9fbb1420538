#if canImport(Glibc)
import Glibc
#endif
import Logging

/// Finished records, the progress file and segment deletion (invariant 4).
extension WriteAheadLog {
    /// Records of `sink` were delivered or dead-lettered. Saved by the next checkpoint.
    /// An array, not any sequence: a generic public method runs unspecialized in its callers'
    /// modules, and iterating an unspecialized sequence allocated per element (two heap calls
    /// per delivered record, one for progress and one for the backlog).
    public func markFinished(sink: String, seqs: [UInt64]) {
        lock.withLock {
            progress.finished(sink: sink, seqs: seqs)
            backlogTracker.finished(sink: sink, seqs: seqs)
            progressDirty = true
        }
    }

    /// The progress of one sink, as the WAL holds it now.
    public func progress(of sink: String) -> DeliveryProgress.Sink {
        lock.withLock { progress.sink(sink) }
    }

    /// Saves progress if it changed, then deletes the segments it shows finished.
    public func checkpoint() throws(FileError) {
        let snapshot: DeliveryProgress? = lock.withLock {
            guard progressDirty else { return nil }
            progressDirty = false
            progress.nextSeq = nextSeq
            if let oldest = segments.first?.summary.firstSeq, oldest > 0 { progress.prune(oldestLiveSeq: oldest) }
            backlogTracker.prune(keeping: Set(segments.lazy.flatMap(\.summary.sinks.keys)))
            return progress
        }
        guard let snapshot else { return }
        do {
            try progressStore.save(snapshot)
            lock.withLock { stats.progressSaves += 1 }
        } catch {
            lock.withLock { progressDirty = true }
            throw error
        }
        _ = try deleteFinishedSegments(progress: snapshot)
    }

    /// Deletes sealed segments whose every record is finished according to `progress`, which must
    /// already be on disk. Returns how many were deleted.
    func deleteFinishedSegments(progress saved: DeliveryProgress) throws(FileError) -> Int {
        let finished: [UInt64] = lock.withLock {
            // The newest segment stays while it is empty (the one a start opened, sealed at
            // shutdown): its name is the seq floor, kept in the directory itself, so that a
            // double fault of the progress copies cannot make seqs start again from 1.
            let newestEmpty = segments.last.flatMap { $0.summary.records == 0 ? $0.id : nil }
            return segments.filter { segment in
                segment.sealed && segment.id != newestEmpty
                    && segment.summary.sinks.allSatisfy { sink, span in
                        saved.sink(sink).isFinished(from: span.firstSeq, through: span.lastSeq)
                    }
            }.map(\.id)
        }
        guard !finished.isEmpty else { return 0 }
        var gone = Set<UInt64>()
        var failure: FileError?
        for id in finished {
            do throws(FileError) {
                try FileIO.unlink(path(SegmentFormat.fileName(id: id)))
                gone.insert(id)
                try FileIO.unlink(path(SegmentFormat.summaryFileName(id: id)))
            } catch {
                failure = error
                break
            }
        }
        if failure == nil {
            do throws(FileError) { try FileIO.syncDirectory(directory) } catch { failure = error }
        }
        // What was unlinked is gone whatever failed after it: the accounting follows the files.
        let waiters: [@Sendable () -> Void] = lock.withLock {
            for s in segments where gone.contains(s.id) { diskBytes -= s.fileBytes }
            segments.removeAll { gone.contains($0.id) }
            return takeSpaceWaiters()
        }
        for w in waiters { w() }
        if let failure { throw failure }
        return gone.count
    }

    func maintenanceLoop() {
        let interval = Int(options.checkpointInterval.milliseconds) * 1_000_000
        while true {
            let stop: Bool = lock.withLock {
                if !stopping { lock.wait(maintenanceWake, nanoseconds: interval) }
                return stopping && stopped
            }
            do {
                try checkpoint()
            } catch {
                progressLog.log(
                    logger, key: "checkpoint", "could not save WAL progress or delete finished segments; will retry",
                    metadata: ["error": "\(error)"])
            }
            if stop { return }
            if lock.withLock({ stopping }) {
                // Wait for the writer to drain, then save a last time.
                while !lock.withLock({ stopped }) { usleep(1000) }
                lock.withLock { progressDirty = true }
            }
        }
    }
}

/// Damage met while running (SinkReader.swift).
extension WriteAheadLog {
    /// Counts, logs (once per place) and copies into quarantine/ a damaged region of a segment.
    func reportCorruption(
        segment id: UInt64, fd: CInt, offset: Int, length: Int, afterSeq: UInt64, beforeSeq: UInt64?, sink: String,
        reason: String
    ) {
        let first: Bool = lock.withLock {
            let isNew = corruptionSeen.insert(CorruptionPlace(segment: id, offset: offset)).inserted
            if isNew { stats.corruptFramesRunning += 1 }
            return isNew
        }
        guard first else { return }
        WALMetrics.corruptFrames.increment()
        let name = SegmentFormat.fileName(id: id)
        let copy = "quarantine/\(name).\(offset).damaged"
        var saved = "saved as \(copy)"
        do throws(FileError) {
            var bytes = [UInt8](repeating: 0, count: min(length, options.segmentSize))
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
            if n < 0 { throw FileError(operation: "pread", path: path(name), errno: errno) }
            bytes.removeLast(bytes.count - n)
            try FileIO.makeDirectories(path("quarantine"))
            try FileIO.replaceAtomically(path(copy), with: bytes, directory: path("quarantine"))
        } catch {
            saved = "could not be saved: \(error)"
        }
        logger.error(
            "a damaged WAL frame was found while reading; the record in it cannot be delivered",
            metadata: [
                "segment": "\(name)", "offset": "\(offset)", "bytes": "\(length)", "after_seq": "\(afterSeq)",
                "before_seq": "\(beforeSeq.map(String.init) ?? "the segment's end")", "reader": "\(sink)",
                "reason": "\(reason)", "copy": "\(saved)",
            ])
    }

    /// Records handed out before a restart that can no longer be read: finished, loudly.
    func reportLost(sink: String, seqs: [UInt64]) {
        lock.withLock {
            stats.corruptRecordsLost += UInt64(seqs.count)
            progress.finished(sink: sink, seqs: seqs)
            backlogTracker.finished(sink: sink, seqs: seqs)
            progressDirty = true
        }
        WALMetrics.lostRecords.increment(by: seqs.count)
        logger.critical(
            "records handed out before a restart can no longer be read from the WAL (damaged); they are counted lost",
            metadata: [
                "sink": "\(sink)",
                "seqs": "\(seqs.prefix(20).map(String.init).joined(separator: ","))\(seqs.count > 20 ? ",..." : "")",
                "records": "\(seqs.count)",
            ])
    }
}

struct CorruptionPlace: Hashable {
    var segment: UInt64
    var offset: Int
}
