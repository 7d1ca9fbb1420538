import SinkdCore

/// What a sealed segment holds, written beside it as `<id>.idx` when it is sealed, so that start-up
/// reads a few hundred bytes per segment instead of the segment itself.
///
/// ```
/// "SINKDIDX" u32 version u32 reserved
/// u64 firstSeq, lastSeq, minAcceptedMillis, maxAcceptedMillis, records, corruptFrames, fileSize
/// u32 sinkCount; per sink: u16 length, name, u64 firstSeq, lastSeq, records, bodyBytes
/// u32 crc32c of all of the above                      <- part 1: read at every start
/// u32 keyCount; per record: u64 keyA, u64 keyB, u64 seq, u64 acceptedAtMillis  (in seq order)
/// u32 crc32c of part 2                                 <- part 2: read only within the dedupe window
/// ```
/// Version 2. Version 1 (written before 2026-12) had no acceptance time per key and hashed keys
/// the old way (`sink ‖ 0 ‖ id`, ambiguous when either contains a NUL byte): its part 1 is read as
/// before, its keys are not loaded (a resend within the dedupe window of an upgrade is accepted
/// again rather than answered `duplicate`).
/// One record's dedupe key in a summary.
public struct SummaryKey: Sendable, Equatable {
    public var key: DedupeKey
    public var seq: UInt64
    public var acceptedAtMillis: UInt64

    public init(key: DedupeKey, seq: UInt64, acceptedAtMillis: UInt64) {
        self.key = key
        self.seq = seq
        self.acceptedAtMillis = acceptedAtMillis
    }
}

public struct SegmentSummary: Sendable, Equatable {
    public struct SinkSpan: Sendable, Equatable {
        public var firstSeq: UInt64
        public var lastSeq: UInt64
        public var records: UInt64
        public var bodyBytes: UInt64

        public init(firstSeq: UInt64, lastSeq: UInt64, records: UInt64, bodyBytes: UInt64) {
            self.firstSeq = firstSeq
            self.lastSeq = lastSeq
            self.records = records
            self.bodyBytes = bodyBytes
        }
    }

    public var firstSeq: UInt64 = 0
    public var lastSeq: UInt64 = 0
    public var minAcceptedMillis: UInt64 = .max
    public var maxAcceptedMillis: UInt64 = 0
    public var records: UInt64 = 0
    public var corruptFrames: UInt64 = 0
    public var fileSize: UInt64 = 0
    public var sinks: [String: SinkSpan] = [:]

    public init() {}

    public mutating func add(seq: UInt64, sink: String, bodyBytes: Int, acceptedAtMillis: UInt64) {
        if records == 0 { firstSeq = seq }
        lastSeq = seq
        records += 1
        minAcceptedMillis = min(minAcceptedMillis, acceptedAtMillis)
        maxAcceptedMillis = max(maxAcceptedMillis, acceptedAtMillis)
        if var span = sinks[sink] {
            span.lastSeq = seq
            span.records += 1
            span.bodyBytes += UInt64(bodyBytes)
            sinks[sink] = span
        } else {
            sinks[sink] = SinkSpan(firstSeq: seq, lastSeq: seq, records: 1, bodyBytes: UInt64(bodyBytes))
        }
    }

    static let magic: [UInt8] = Array("SINKDIDX".utf8)

    public static let version: UInt32 = 2

    public func encode(keys: [SummaryKey]) -> [UInt8] {
        var out = Self.magic
        out.appendLE(Self.version)
        out.appendLE(UInt32(0))
        for v in [firstSeq, lastSeq, minAcceptedMillis, maxAcceptedMillis, records, corruptFrames, fileSize] {
            out.appendLE(v)
        }
        out.appendLE(UInt32(sinks.count))
        for (name, span) in sinks.sorted(by: { $0.key < $1.key }) {
            out.appendLE(UInt16(name.utf8.count))
            out.append(contentsOf: name.utf8)
            for v in [span.firstSeq, span.lastSeq, span.records, span.bodyBytes] { out.appendLE(v) }
        }
        out.appendLE(CRC32C.checksum(out))
        let part2Start = out.count
        out.appendLE(UInt32(keys.count))
        for k in keys {
            out.appendLE(k.key.a)
            out.appendLE(k.key.b)
            out.appendLE(k.seq)
            out.appendLE(k.acceptedAtMillis)
        }
        out.appendLE(CRC32C.checksum(out[part2Start...]))
        return out
    }

    /// Decodes part 1. Returns the summary and where part 2 starts (nil for a version-1 file,
    /// whose keys are not used); nil if damaged.
    public static func decode(_ bytes: [UInt8]) -> (summary: SegmentSummary, keysOffset: Int?)? {
        bytes.withUnsafeBytes { raw -> (SegmentSummary, Int?)? in
            var c = ByteCursor(raw)
            do {
                guard Array(try c.take(8)) == magic else { return nil }
                let version = try c.u32()
                guard version == 1 || version == 2 else { return nil }
                _ = try c.u32()
                var s = SegmentSummary()
                s.firstSeq = try c.u64()
                s.lastSeq = try c.u64()
                s.minAcceptedMillis = try c.u64()
                s.maxAcceptedMillis = try c.u64()
                s.records = try c.u64()
                s.corruptFrames = try c.u64()
                s.fileSize = try c.u64()
                let count = Int(try c.u32())
                for _ in 0..<count {
                    let name = try c.string(Int(try c.u16()))
                    s.sinks[name] = SinkSpan(
                        firstSeq: try c.u64(), lastSeq: try c.u64(), records: try c.u64(), bodyBytes: try c.u64())
                }
                let end = c.offset
                guard try c.u32() == CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<end])) else { return nil }
                return (s, version == 2 ? c.offset : nil)
            } catch {
                return nil
            }
        }
    }

    /// Decodes part 2, the dedupe keys; nil if damaged.
    public static func decodeKeys(_ bytes: [UInt8], from offset: Int) -> [SummaryKey]? {
        bytes.withUnsafeBytes { raw -> [SummaryKey]? in
            var c = ByteCursor(raw)
            c.offset = offset
            do {
                let count = Int(try c.u32())
                guard count <= c.remaining / 32 else { return nil }
                var keys: [SummaryKey] = []
                keys.reserveCapacity(count)
                for _ in 0..<count {
                    keys.append(
                        SummaryKey(
                            key: DedupeKey(a: try c.u64(), b: try c.u64()), seq: try c.u64(),
                            acceptedAtMillis: try c.u64()))
                }
                let end = c.offset
                guard try c.u32() == CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[offset..<end])) else {
                    return nil
                }
                return keys
            } catch {
                return nil
            }
        }
    }
}
