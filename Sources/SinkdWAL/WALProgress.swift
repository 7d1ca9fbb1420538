#if canImport(Glibc)
import Glibc
#endif
import Logging

/// Finished records, the progress file and segment deletion (invariant 4).
extension WriteAheadLog {
    /// Records of `sink` were delivered or dead-lettered. Saved by the next checkpoint.
    public func markFinished(sink: String, seqs: some Sequence<UInt64>) {
        lock.withLock {
            progress.finished(sink: sink, seqs: seqs)
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
            return progress
        }
        guard let snapshot else { return }
        do {
            try progressStore.save(snapshot)
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
            segments.filter { segment in
                segment.sealed && segment.summary.sinks.allSatisfy { sink, span in
                    saved.sink(sink).isFinished(from: span.firstSeq, through: span.lastSeq)
                }
            }.map(\.id)
        }
        guard !finished.isEmpty else { return 0 }
        for id in finished {
            try FileIO.unlink(path(SegmentFormat.fileName(id: id)))
            try FileIO.unlink(path(SegmentFormat.summaryFileName(id: id)))
        }
        try FileIO.syncDirectory(directory)
        let waiters: [@Sendable () -> Void] = lock.withLock {
            let gone = Set(finished)
            for s in segments where gone.contains(s.id) { diskBytes -= s.fileBytes }
            segments.removeAll { gone.contains($0.id) }
            return takeSpaceWaiters()
        }
        for w in waiters { w() }
        return finished.count
    }

    func maintenanceLoop() {
        let interval = Int(options.checkpointInterval.milliseconds) * 1_000_000
        while true {
            let stop: Bool = lock.withLock {
                if !stopping { lock.wait(nanoseconds: interval) }
                return stopping && stopped
            }
            do {
                try checkpoint()
            } catch {
                progressLog.log(logger, key: "checkpoint", "could not save WAL progress or delete finished segments; will retry", metadata: ["error": "\(error)"])
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
