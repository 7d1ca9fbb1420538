#if canImport(Glibc)
import Glibc
#endif
import Logging
import SinkdCore

/// What start-up found and did, for the log and for `sinkd wal verify`.
public struct RecoveryReport: Sendable, Equatable {
    public var segments = 0
    public var scannedSegments = 0
    public var records: UInt64 = 0
    public var corruptFrames: [(segment: String, offset: Int, length: Int)] = []
    public var tornTails: [(segment: String, offset: Int, length: Int)] = []
    public var quarantined: [(segment: String, reason: String)] = []
    public var deletedFinishedSegments = 0
    /// Acknowledged records no present segment holds (a segment file missing): lost.
    public var missingRecords: UInt64 = 0

    public static func == (a: Self, b: Self) -> Bool {
        a.segments == b.segments && a.records == b.records
            && a.corruptFrames.map(\.offset) == b.corruptFrames.map(\.offset)
            && a.tornTails.map(\.offset) == b.tornTails.map(\.offset)
            && a.quarantined.map(\.segment) == b.quarantined.map(\.segment)
    }
}

/// The result of reading one segment file from its first frame to its end.
struct SegmentScanResult {
    var summary = SegmentSummary()
    var keys: [SummaryKey] = []
    var corrupt: [(offset: Int, length: Int)] = []
    var tornTail: (offset: Int, length: Int)?
    /// Where valid data ends: the size to truncate a torn tail to.
    var validEnd = SegmentFormat.headerSize
}

public enum SegmentOpenError: Error, CustomStringConvertible {
    case tooShort(Int)
    case badHeader
    case io(FileError)

    public var description: String {
        switch self {
        case .tooShort(let size): "shorter than a segment header (\(size) bytes)"
        case .badHeader: "not a sinkd WAL segment (bad header)"
        case .io(let error): "unreadable: \(error)"
        }
    }
}

extension FileSegment {
    /// Opens a segment file for reading and checks its header. The caller closes `fd`.
    public static func open(_ path: String) throws(SegmentOpenError) -> FileSegment {
        let fd: CInt
        do { fd = try FileIO.open(path, O_RDONLY) } catch { throw .io(error) }
        do throws(SegmentOpenError) {
            let size: Int
            do { size = try FileIO.size(fd, path: path) } catch { throw .io(error) }
            guard size >= SegmentFormat.headerSize else { throw .tooShort(size) }
            let source = FileSegment(fd: fd, size: size)
            var header = [UInt8](repeating: 0, count: SegmentFormat.headerSize)
            let read = header.withUnsafeMutableBytes { try? source.read(at: 0, into: $0) }
            guard read == SegmentFormat.headerSize else {
                throw .io(FileError(operation: "read", path: path, errno: EIO))
            }
            guard Array(header[0..<8]) == SegmentFormat.magic,
                header[8..<12].withUnsafeBytes({ UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) })
                    == SegmentFormat.version
            else { throw .badHeader }
            return source
        } catch {
            close(fd)
            throw error
        }
    }
}

extension WriteAheadLog {
    /// Reads every frame of a segment file, verifying checksums. Memory stays bounded: only keys
    /// and the summary are kept.
    static func scanSegment(
        path: String, maxBody: Int, nearSeq: UInt64 = 0
    ) throws(SegmentOpenError) -> SegmentScanResult {
        let source = try FileSegment.open(path)
        defer { close(source.fd) }
        var result = SegmentScanResult()
        var scanner = SegmentScanner(source: source, maxBody: maxBody, nearSeq: nearSeq)
        do {
            scan: while true {
                switch try scanner.next() {
                case .record(let seq, _, let bodyOffset, let bodyLength):
                    let ok: Bool = scanner.withBody(bodyOffset: bodyOffset, length: bodyLength) { body in
                        guard let key = try? RecordCodec.peekKey(body),
                            let sink = String(validating: key.sink, as: UTF8.self)
                        else { return false }
                        result.summary.add(
                            seq: seq, sink: sink, bodyBytes: bodyLength, acceptedAtMillis: key.acceptedAtMillis)
                        result.keys.append(
                            SummaryKey(
                                key: DedupeKey(sink: key.sink, id: key.id), seq: seq,
                                acceptedAtMillis: key.acceptedAtMillis))
                        return true
                    }
                    if !ok {
                        result.corrupt.append(
                            (bodyOffset - SegmentFormat.frameHeaderSize, bodyLength + SegmentFormat.frameHeaderSize))
                    }
                    result.validEnd = bodyOffset + bodyLength
                case .corrupt(let offset, let length):
                    result.corrupt.append((offset, length))
                case .tornTail(let offset, let length):
                    result.tornTail = (offset, length)
                    break scan
                case .end:
                    break scan
                }
            }
        } catch let error as FileError {
            throw .io(error)
        } catch {
            throw .badHeader
        }
        result.summary.corruptFrames = UInt64(result.corrupt.count)
        result.summary.fileSize = UInt64(result.validEnd)
        return result
    }

    /// Start-up (invariants 5 and 6): the directory lock, oddities moved aside, progress,
    /// summaries, the scan of unsealed segments, deletion of finished ones, the dedupe table.
    /// Needs no free space: a summary that cannot be written is skipped (the segment is scanned
    /// again next time), and the active segment is opened later if the disk is full.
    func recover() throws(FileError) {
        try FileIO.makeDirectories(directory)
        try FileIO.checkStateDirectory(directory)
        try lockDirectory()
        var report = RecoveryReport()
        WALMetrics.exportAll()
        var names = try FileIO.listDirectory(directory)
        try moveAsideOddities(&names, report: &report)
        for name in names where name.hasSuffix(".tmp") {
            do throws(FileError) {
                try FileIO.unlink(path(name))
            } catch {
                try moveAside(name, reason: "a leftover temporary that cannot be removed (\(error))", report: &report)
            }
        }
        // Progress: the newest valid copy; the seq floor from every valid copy.
        let loaded = progressStore.load()
        for damaged in loaded.damaged {
            try moveAside(damaged.name, reason: "damaged progress copy: \(damaged.reason)", report: &report)
            progressStore.forget(damaged.name)
        }
        if let p = loaded.progress {
            progress = p
        } else if !loaded.damaged.isEmpty {
            logger.error(
                "no readable copy of the WAL progress is left: every record still in the WAL will be delivered again")
        }
        let segmentIDs = names.compactMap { SegmentFormat.id(fromFileName: $0, suffix: ".wal") }.sorted()
        let summaryIDs = Set(names.compactMap { SegmentFormat.id(fromFileName: $0, suffix: ".idx") })
        var orphanSummaries: [SegmentSummary] = []
        for id in summaryIDs where !segmentIDs.contains(id) {
            // Its segment is gone: what it held is read first (records no reader took yet are
            // reported lost below, by sink), then the summary goes too.
            if let summary = Self.readSummary(path(SegmentFormat.summaryFileName(id: id))) {
                orphanSummaries.append(summary)
            }
            try FileIO.unlink(path(SegmentFormat.summaryFileName(id: id)))
        }
        var maxSeq: UInt64 = 0
        for id in segmentIDs {
            let name = SegmentFormat.fileName(id: id)
            let size = try? fileSize(path(name))
            if summaryIDs.contains(id), let summary = Self.readSummary(path(SegmentFormat.summaryFileName(id: id))),
                summary.fileSize == size.map(UInt64.init)
            {
                segments.append(
                    Segment(
                        id: id, summary: summary, visibleSize: Int(summary.fileSize), sealed: true,
                        fileBytes: Int(summary.fileSize)))
                maxSeq = max(maxSeq, summary.lastSeq)
                report.records += summary.records
                continue
            }
            report.scannedSegments += 1
            let scan: SegmentScanResult
            do throws(SegmentOpenError) {
                scan = try Self.scanSegment(path: path(name), maxBody: options.segmentSize, nearSeq: id)
            } catch {
                switch error {
                case .tooShort(let size):
                    // Created but never given a header or a record: nothing to keep.
                    logger.notice(
                        "removing an empty WAL segment left by an interrupted start",
                        metadata: ["segment": "\(name)", "bytes": "\(size)"])
                    try FileIO.unlink(path(name))
                case .badHeader:
                    try quarantine(name, reason: "not a sinkd WAL segment (bad header)", report: &report)
                case .io(let ioError):
                    try quarantine(name, reason: "unreadable: \(ioError)", report: &report)
                }
                continue
            }
            for c in scan.corrupt {
                report.corruptFrames.append((name, c.offset, c.length))
                logger.error(
                    "skipped a corrupt WAL frame",
                    metadata: ["segment": "\(name)", "offset": "\(c.offset)", "bytes": "\(c.length)"])
            }
            var fileBytes = size ?? scan.validEnd
            if let torn = scan.tornTail {
                report.tornTails.append((name, torn.offset, torn.length))
                logger.warning(
                    "truncating a torn tail (an interrupted write, never acknowledged)",
                    metadata: ["segment": "\(name)", "offset": "\(torn.offset)", "bytes": "\(torn.length)"])
                do throws(FileError) {
                    let fd = try FileIO.open(path(name), O_WRONLY | O_NOFOLLOW)
                    defer { close(fd) }
                    try FileIO.truncate(fd, to: scan.validEnd, path: path(name))
                    try FileIO.dataSync(fd, path: path(name))
                    fileBytes = scan.validEnd
                } catch {
                    logger.error(
                        "could not truncate a torn tail; readers stop before it",
                        metadata: ["segment": "\(name)", "error": "\(error)"])
                }
            }
            if fileBytes == scan.validEnd {
                do throws(FileError) {
                    try FileIO.replaceAtomically(
                        path(SegmentFormat.summaryFileName(id: id)), with: scan.summary.encode(keys: scan.keys),
                        directory: directory)
                } catch {
                    // Only an optimisation: without it the next start scans this segment again.
                    logger.warning(
                        "could not write a WAL segment's summary; the next start scans the segment again",
                        metadata: ["segment": "\(name)", "error": "\(error)"])
                }
            }
            segments.append(
                Segment(id: id, summary: scan.summary, visibleSize: scan.validEnd, sealed: true, fileBytes: fileBytes))
            scannedKeys[id] = scan.keys
            maxSeq = max(maxSeq, scan.summary.lastSeq)
            report.records += scan.summary.records
        }
        report.segments = segments.count
        reportMissingRecords(orphanSummaries: orphanSummaries, report: &report)
        // A segment is named by the first seq it holds (or would hold, when empty: the one opened
        // at every start), so no seq below the newest name is ever assigned again, even with both
        // progress copies damaged and every record delivered.
        nextSeq = max(loaded.floor, maxSeq + 1, segments.last?.id ?? 0, 1)
        diskBytes = segments.reduce(0) { $0 + $1.fileBytes }
        stats.durableSeq = maxSeq
        stats.corruptFramesAtStart = UInt64(report.corruptFrames.count)
        stats.tornTailBytesAtStart = UInt64(report.tornTails.reduce(0) { $0 + $1.length })
        stats.quarantinedSegments = report.quarantined.count
        // Both progress copies exist from the start (their space allocated now, while there is
        // some), so that a later checkpoint never needs free space.
        if !progressStore.hasBothSlots {
            var initial = progress
            initial.nextSeq = nextSeq
            do throws(FileError) {
                try progressStore.save(initial)
            } catch {
                logger.warning(
                    "could not create the WAL progress files yet; will retry at the next checkpoint",
                    metadata: ["error": "\(error)"])
            }
        }
        report.deletedFinishedSegments = try deleteFinishedSegments(progress: progress)
        loadDedupe()
        scannedKeys = [:]
        recoveryReport = report
        logger.info(
            "WAL recovered",
            metadata: [
                "segments": "\(segments.count)", "records": "\(report.records)", "scanned": "\(report.scannedSegments)",
                "corrupt_frames": "\(report.corruptFrames.count)", "torn_tails": "\(report.tornTails.count)",
                "quarantined": "\(report.quarantined.count)", "next_seq": "\(nextSeq)",
            ])
    }

    /// Acknowledged records that no present segment holds (MissingRecords): reported per sink at
    /// critical with their seqs, counted (`sinkd_wal_lost_records_total`, status), and finished in
    /// the progress so that they do not stay outstanding for ever.
    private func reportMissingRecords(orphanSummaries: [SegmentSummary], report: inout RecoveryReport) {
        let present = segments.compactMap { s -> ClosedRange<UInt64>? in
            s.summary.records > 0 && s.summary.firstSeq <= s.summary.lastSeq
                ? s.summary.firstSeq...s.summary.lastSeq : nil
        }
        let losses = MissingRecords.find(progress: progress, present: present, orphanSummaries: orphanSummaries)
        for loss in losses {
            progress.finished(sink: loss.sink, seqs: loss.outstanding)
            report.missingRecords += loss.records
            stats.missingRecordsLost += loss.records
            WALMetrics.lostRecords.increment(by: Int(loss.records))
            logger.critical(
                "acknowledged records are gone from the WAL: a segment file holding them is missing (deleted, or lost by the file system); they cannot be delivered",
                metadata: [
                    "sink": "\(loss.sink)", "seqs": "\(loss.firstSeq)-\(loss.lastSeq)",
                    "records": "\(loss.exact ? "" : "at most ")\(loss.records)",
                ])
        }
        if !losses.isEmpty { progressDirty = true }
    }

    /// An exclusive lock on the directory for the process's lifetime (flock on the directory
    /// itself, so taking it needs no free space). `lock` beside it names the holder's pid.
    private func lockDirectory() throws(FileError) {
        let fd = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw FileError(operation: "open", path: directory, errno: errno) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            close(fd)
            let holder = (try? FileIO.readFile(path("lock"), noFollow: true))
                .map { String(decoding: $0.filter { $0 >= 0x30 && $0 <= 0x39 }, as: UTF8.self) }.flatMap {
                    $0.isEmpty ? nil : $0
                }
            throw FileError(
                operation: "lock", path: directory, errno: code,
                detail:
                    "another sinkd\(holder.map { " (pid \($0))" } ?? "") is using this WAL directory; stop it, or give this instance its own wal.directory"
            )
        }
        lockFD = fd
        let pidFile = Glibc.open(path("lock"), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o640)
        if pidFile >= 0 {
            let text = Array("\(getpid())\n".utf8)
            _ = text.withUnsafeBytes { Glibc.write(pidFile, $0.baseAddress, $0.count) }
            close(pidFile)
        }
    }

    /// Entries that have one of sinkd's names but the wrong type (a directory where a file
    /// belongs, a symbolic link), and a `quarantine` that is not a directory: moved aside with a
    /// log line, so that start-up goes on.
    private func moveAsideOddities(_ names: inout [String], report: inout RecoveryReport) throws(FileError) {
        var kept: [String] = []
        for name in names {
            var st = stat()
            guard lstat(path(name), &st) == 0 else { continue }
            let type = st.st_mode & S_IFMT
            let ours =
                name.hasSuffix(".wal") || name.hasSuffix(".idx") || name.hasSuffix(".tmp") || name == "lock"
                || ProgressStore.slotNames.contains(name) || name == ProgressStore.legacyName
            if name == "quarantine" {
                if type != S_IFDIR {
                    try moveAside(name, reason: "quarantine is not a directory", report: &report, toQuarantine: false)
                    continue
                }
            } else if ours, type != S_IFREG {
                try moveAside(
                    name, reason: type == S_IFLNK ? "a symbolic link where sinkd keeps a file" : "not a regular file",
                    report: &report)
                continue
            }
            kept.append(name)
        }
        names = kept
    }

    /// Moves `name` into quarantine/ (or, for a bad `quarantine` itself, beside it) under a name
    /// that does not exist yet, and makes both directories durable.
    func moveAside(
        _ name: String, reason: String, report: inout RecoveryReport, toQuarantine: Bool = true
    ) throws(FileError) {
        let stamp = WallClock.millis()
        let target: String
        if toQuarantine {
            try ensureQuarantineDirectory(report: &report)
            target = path("quarantine") + "/" + name + ".\(stamp)"
        } else {
            target = path(name) + ".moved-aside.\(stamp)"
        }
        try FileIO.rename(path(name), target)
        if toQuarantine { try FileIO.syncDirectory(path("quarantine")) }
        try FileIO.syncDirectory(directory)
        report.quarantined.append((name, reason))
        logger.error(
            "moved an unexpected entry of the WAL directory aside",
            metadata: ["file": "\(name)", "to": "\(target)", "reason": "\(reason)"])
    }

    private func ensureQuarantineDirectory(report: inout RecoveryReport) throws(FileError) {
        var st = stat()
        if lstat(path("quarantine"), &st) == 0, (st.st_mode & S_IFMT) != S_IFDIR {
            try moveAside("quarantine", reason: "quarantine is not a directory", report: &report, toQuarantine: false)
        }
        try FileIO.makeDirectories(path("quarantine"))
    }

    private func fileSize(_ path: String) throws(FileError) -> Int {
        let fd = try FileIO.open(path, O_RDONLY)
        defer { close(fd) }
        return try FileIO.size(fd, path: path)
    }

    static func readSummary(_ path: String) -> SegmentSummary? {
        guard let bytes = try? FileIO.readFile(path, noFollow: true) else { return nil }
        return SegmentSummary.decode(bytes)?.summary
    }

    private func quarantine(_ name: String, reason: String, report: inout RecoveryReport) throws(FileError) {
        try ensureQuarantineDirectory(report: &report)
        let q = path("quarantine")
        var target = q + "/" + name
        var st = stat()
        if lstat(target, &st) == 0 { target += ".\(WallClock.millis())" }
        try FileIO.rename(path(name), target)
        try FileIO.unlink(path(String(name.dropLast(4)) + ".idx"))
        try FileIO.syncDirectory(q)
        try FileIO.syncDirectory(directory)
        report.quarantined.append((name, reason))
        logger.error(
            "moved an unreadable WAL file to quarantine/", metadata: ["file": "\(name)", "reason": "\(reason)"])
    }

    /// Refills the dedupe table from the newest segments whose records are within the window,
    /// at most `dedupe_max_entries` keys: bounded by the configuration, not by the backlog. Each
    /// key keeps its own acceptance time, so the window is measured per record, as at ingest.
    private func loadDedupe() {
        guard options.dedupeMaxEntries > 0 else { return }
        let now = WallClock.millis()
        let cutoff = now - min(now, UInt64(options.dedupeWindow.milliseconds))
        var batches: [[SummaryKey]] = []
        var total = 0
        for segment in segments.reversed() where total < options.dedupeMaxEntries {
            guard segment.summary.records > 0, segment.summary.maxAcceptedMillis >= cutoff else { break }
            let keys: [SummaryKey]
            if let scanned = scannedKeys[segment.id] {
                keys = scanned
            } else {
                guard
                    let bytes = try? FileIO.readFile(
                        path(SegmentFormat.summaryFileName(id: segment.id)), noFollow: true),
                    let (_, offset) = SegmentSummary.decode(bytes), let offset,
                    let decoded = SegmentSummary.decodeKeys(bytes, from: offset)
                else { continue }
                keys = decoded
            }
            batches.append(keys)
            total += keys.count
        }
        for batch in batches.reversed() {
            for k in batch.sorted(by: { $0.seq < $1.seq }) where k.acceptedAtMillis >= cutoff {
                dedupe.insert(k.key, seq: k.seq, now: k.acceptedAtMillis)
            }
        }
    }
}
