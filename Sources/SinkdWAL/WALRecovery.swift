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

    public static func == (a: Self, b: Self) -> Bool {
        a.segments == b.segments && a.records == b.records && a.corruptFrames.map(\.offset) == b.corruptFrames.map(\.offset)
            && a.tornTails.map(\.offset) == b.tornTails.map(\.offset) && a.quarantined.map(\.segment) == b.quarantined.map(\.segment)
    }
}

/// The result of reading one segment file from its first frame to its end.
struct SegmentScanResult {
    var summary = SegmentSummary()
    var keys: [(DedupeKey, UInt64)] = []
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
            guard read == SegmentFormat.headerSize else { throw .io(FileError(operation: "read", path: path, errno: EIO)) }
            guard Array(header[0..<8]) == SegmentFormat.magic,
                  header[8..<12].withUnsafeBytes({ UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }) == SegmentFormat.version
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
    static func scanSegment(path: String, maxBody: Int) throws(SegmentOpenError) -> SegmentScanResult {
        let source = try FileSegment.open(path)
        defer { close(source.fd) }
        var result = SegmentScanResult()
        var scanner = SegmentScanner(source: source, maxBody: maxBody)
        do {
            scan: while true {
                switch try scanner.next() {
                case .record(let seq, _, let bodyOffset, let bodyLength):
                    let ok: Bool = scanner.withBody(bodyOffset: bodyOffset, length: bodyLength) { body in
                        guard let key = try? RecordCodec.peekKey(body), let sink = String(validating: key.sink, as: UTF8.self) else { return false }
                        result.summary.add(seq: seq, sink: sink, bodyBytes: bodyLength, acceptedAtMillis: key.acceptedAtMillis)
                        result.keys.append((DedupeKey(sink: key.sink, id: key.id), seq))
                        return true
                    }
                    if !ok { result.corrupt.append((bodyOffset - SegmentFormat.frameHeaderSize, bodyLength + SegmentFormat.frameHeaderSize)) }
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

    /// Start-up (invariants 5 and 6): progress, summaries, the scan of unsealed segments,
    /// deletion of finished ones, the dedupe table.
    func recover() throws(FileError) {
        try FileIO.makeDirectories(directory)
        var report = RecoveryReport()
        let names = try FileIO.listDirectory(directory)
        for name in names where name.hasSuffix(".tmp") {
            try FileIO.unlink(path(name))
        }
        // Progress.
        if names.contains("progress") {
            let bytes = try FileIO.readFile(path("progress"))
            if let p = DeliveryProgress.decode(bytes) {
                progress = p
            } else {
                try quarantine("progress", reason: "checksum mismatch", report: &report)
                logger.error("the WAL progress file is damaged and was moved to quarantine/: every record still in the WAL will be delivered again")
            }
        }
        let segmentIDs = names.compactMap { SegmentFormat.id(fromFileName: $0, suffix: ".wal") }.sorted()
        let summaryIDs = Set(names.compactMap { SegmentFormat.id(fromFileName: $0, suffix: ".idx") })
        for id in summaryIDs where !segmentIDs.contains(id) {
            try FileIO.unlink(path(SegmentFormat.summaryFileName(id: id)))  // its segment was deleted
        }
        var maxSeq: UInt64 = 0
        for id in segmentIDs {
            let name = SegmentFormat.fileName(id: id)
            if summaryIDs.contains(id), let summary = Self.readSummary(path(SegmentFormat.summaryFileName(id: id))), summary.fileSize == (try? fileSize(path(name))).map(UInt64.init) {
                segments.append(Segment(id: id, summary: summary, visibleSize: Int(summary.fileSize), sealed: true))
                maxSeq = max(maxSeq, summary.lastSeq)
                report.records += summary.records
                continue
            }
            report.scannedSegments += 1
            let scan: SegmentScanResult
            do throws(SegmentOpenError) {
                scan = try Self.scanSegment(path: path(name), maxBody: options.segmentSize)
            } catch {
                switch error {
                case .tooShort(let size):
                    // Created but never given a header or a record: nothing to keep.
                    logger.notice("removing an empty WAL segment left by an interrupted start", metadata: ["segment": "\(name)", "bytes": "\(size)"])
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
                logger.error("skipped a corrupt WAL frame", metadata: ["segment": "\(name)", "offset": "\(c.offset)", "bytes": "\(c.length)"])
            }
            if let torn = scan.tornTail {
                report.tornTails.append((name, torn.offset, torn.length))
                logger.warning("truncating a torn tail (an interrupted write, never acknowledged)", metadata: ["segment": "\(name)", "offset": "\(torn.offset)", "bytes": "\(torn.length)"])
                let fd = try FileIO.open(path(name), O_WRONLY)
                defer { close(fd) }
                try FileIO.truncate(fd, to: scan.validEnd, path: path(name))
                try FileIO.dataSync(fd, path: path(name))
            }
            try FileIO.replaceAtomically(path(SegmentFormat.summaryFileName(id: id)), with: scan.summary.encode(keys: scan.keys), directory: directory)
            segments.append(Segment(id: id, summary: scan.summary, visibleSize: scan.validEnd, sealed: true))
            maxSeq = max(maxSeq, scan.summary.lastSeq)
            report.records += scan.summary.records
        }
        report.segments = segments.count
        nextSeq = max(progress.nextSeq, maxSeq + 1, 1)
        totalBytes = segments.reduce(0) { $0 + $1.visibleSize }
        stats.durableSeq = maxSeq
        stats.corruptFramesAtStart = UInt64(report.corruptFrames.count)
        stats.tornTailBytesAtStart = UInt64(report.tornTails.reduce(0) { $0 + $1.length })
        stats.quarantinedSegments = report.quarantined.count
        report.deletedFinishedSegments = try deleteFinishedSegments(progress: progress)
        loadDedupe()
        recoveryReport = report
        logger.info("WAL recovered", metadata: [
            "segments": "\(segments.count)", "records": "\(report.records)", "scanned": "\(report.scannedSegments)",
            "corrupt_frames": "\(report.corruptFrames.count)", "torn_tails": "\(report.tornTails.count)",
            "quarantined": "\(report.quarantined.count)", "next_seq": "\(nextSeq)",
        ])
    }

    private func fileSize(_ path: String) throws(FileError) -> Int {
        let fd = try FileIO.open(path, O_RDONLY)
        defer { close(fd) }
        return try FileIO.size(fd, path: path)
    }

    static func readSummary(_ path: String) -> SegmentSummary? {
        guard let bytes = try? FileIO.readFile(path) else { return nil }
        return SegmentSummary.decode(bytes)?.summary
    }

    private func quarantine(_ name: String, reason: String, report: inout RecoveryReport) throws(FileError) {
        let q = path("quarantine")
        try FileIO.makeDirectories(q)
        try FileIO.rename(path(name), q + "/" + name)
        try FileIO.unlink(path(String(name.dropLast(4)) + ".idx"))
        try FileIO.syncDirectory(directory)
        report.quarantined.append((name, reason))
        logger.error("moved an unreadable WAL file to quarantine/", metadata: ["file": "\(name)", "reason": "\(reason)"])
    }

    /// Refills the dedupe table from the newest summaries whose records are within the window,
    /// at most `dedupe_max_entries` keys: bounded by the configuration, not by the backlog.
    private func loadDedupe() {
        guard options.dedupeMaxEntries > 0 else { return }
        let now = WallClock.millis()
        let cutoff = now - min(now, UInt64(options.dedupeWindow.milliseconds))
        var batches: [(millis: UInt64, keys: [(DedupeKey, UInt64)])] = []
        var total = 0
        for segment in segments.reversed() where total < options.dedupeMaxEntries {
            guard segment.summary.records > 0, segment.summary.maxAcceptedMillis >= cutoff else { break }
            guard let bytes = try? FileIO.readFile(path(SegmentFormat.summaryFileName(id: segment.id))),
                  let (_, offset) = SegmentSummary.decode(bytes), let keys = SegmentSummary.decodeKeys(bytes, from: offset)
            else { continue }
            batches.append((segment.summary.minAcceptedMillis, keys))
            total += keys.count
        }
        for batch in batches.reversed() {
            for (key, seq) in batch.keys { dedupe.insert(key, seq: seq, now: max(batch.millis, cutoff)) }
        }
    }
}

enum WallClock {
    static func millis() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }
}
