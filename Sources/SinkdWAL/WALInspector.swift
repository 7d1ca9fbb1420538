#if canImport(Glibc)
import Glibc
#endif
import SinkdCore

/// Offline reading of a WAL directory for `sinkd wal verify` and `sinkd wal dump`: every segment,
/// every frame, nothing modified.
public enum WALInspector {
    public struct SegmentReport: Sendable {
        public var name: String
        public var bytes: Int
        public var records = 0
        public var firstSeq: UInt64?
        public var lastSeq: UInt64?
        public var corrupt: [(offset: Int, length: Int)] = []
        public var tornTail: (offset: Int, length: Int)?
        public var unreadable: String?
    }

    /// Visits every record of every segment in seq order. `visit` gets nil records for frames
    /// whose body does not decode (counted as corrupt).
    public static func inspect(
        directory: String, maxBody: Int = 1 << 30, visit: (SequencedRecord) throws -> Void = { _ in }
    ) throws -> [SegmentReport] {
        let names = try FileIO.listDirectory(directory).filter {
            SegmentFormat.id(fromFileName: $0, suffix: ".wal") != nil
        }
        var reports: [SegmentReport] = []
        for name in names {
            let path = directory + "/" + name
            let source: FileSegment
            do {
                source = try FileSegment.open(path)
            } catch {
                var report = SegmentReport(name: name, bytes: 0)
                report.unreadable = error.description
                reports.append(report)
                continue
            }
            defer { close(source.fd) }
            var report = SegmentReport(name: name, bytes: source.size)
            var scanner = SegmentScanner(source: source, maxBody: maxBody)
            scan: while true {
                switch try scanner.next() {
                case .record(let seq, let frameOffset, let bodyOffset, let bodyLength):
                    let decoded = scanner.withBody(bodyOffset: bodyOffset, length: bodyLength) {
                        try? RecordCodec.decode($0)
                    }
                    guard let record = decoded else {
                        report.corrupt.append((frameOffset, bodyLength + SegmentFormat.frameHeaderSize))
                        continue
                    }
                    report.records += 1
                    if report.firstSeq == nil { report.firstSeq = seq }
                    report.lastSeq = seq
                    try visit(SequencedRecord(seq: seq, record: record))
                case .corrupt(let offset, let length):
                    report.corrupt.append((offset, length))
                case .tornTail(let offset, let length):
                    report.tornTail = (offset, length)
                    break scan
                case .end:
                    break scan
                }
            }
            reports.append(report)
        }
        return reports
    }
}
