import SinkdCore

/// The body of a WAL frame: one `EventRecord`, little-endian.
///
/// ```
/// u8   presence flags: 1 workflowInstanceId, 2 workflowType, 4 workflowVersion,
///                      8 correlationId, 16 taskRefName, 32 priority
/// u64  acceptedAtMillis
/// u16  sink length,  sink bytes (UTF-8)
/// u8   id length,    id bytes (UTF-8, 1 to 255)
/// for each present string field, in flag order: u16 length, bytes
/// i64  workflowVersion   (if present)
/// u8   priority          (if present)
/// u32  payload length, payload bytes (the JSON text as received)
/// ```
public enum RecordCodec {
    public struct DecodeError: Error, Sendable, Equatable {
        public var reason: String
    }

    public static func encodedSize(_ r: EventRecord) -> Int {
        var n = 1 + 8 + 2 + r.sink.utf8.count + 1 + r.id.utf8.count + 4 + r.payload.count
        // Field by field, not through an array of them: this runs for every record ingested.
        if let s = r.workflowInstanceId { n += 2 + s.utf8.count }
        if let s = r.workflowType { n += 2 + s.utf8.count }
        if let s = r.correlationId { n += 2 + s.utf8.count }
        if let s = r.taskRefName { n += 2 + s.utf8.count }
        if r.workflowVersion != nil { n += 8 }
        if r.priority != nil { n += 1 }
        return n
    }

    /// Appends the body of `r` to `out`. Strings longer than their length field are the caller's bug:
    /// ingest validates lengths first.
    public static func encode(_ r: EventRecord, into out: inout [UInt8]) {
        encode(r, acceptedAtMillis: r.acceptedAtMillis, into: &out)
    }

    /// The same with `acceptedAtMillis` in place of the record's (ingest stamps it as it appends).
    public static func encode(_ r: EventRecord, acceptedAtMillis: UInt64, into out: inout [UInt8]) {
        var flags: UInt8 = 0
        if r.workflowInstanceId != nil { flags |= 1 }
        if r.workflowType != nil { flags |= 2 }
        if r.workflowVersion != nil { flags |= 4 }
        if r.correlationId != nil { flags |= 8 }
        if r.taskRefName != nil { flags |= 16 }
        if r.priority != nil { flags |= 32 }
        out.append(flags)
        out.appendLE(acceptedAtMillis)
        appendString16(r.sink, &out)
        precondition(r.id.utf8.count <= 255, "record id longer than 255 bytes")
        out.append(UInt8(r.id.utf8.count))
        out.append(contentsOf: r.id.utf8)
        if let s = r.workflowInstanceId { appendString16(s, &out) }
        if let s = r.workflowType { appendString16(s, &out) }
        if let s = r.correlationId { appendString16(s, &out) }
        if let s = r.taskRefName { appendString16(s, &out) }
        if let v = r.workflowVersion { out.appendLE(UInt64(bitPattern: v)) }
        if let p = r.priority { out.append(p) }
        out.appendLE(UInt32(r.payload.count))
        out.append(contentsOf: r.payload)
    }

    private static func appendString16(_ s: String, _ out: inout [UInt8]) {
        precondition(s.utf8.count <= Int(UInt16.max), "string field longer than 65535 bytes")
        out.appendLE(UInt16(s.utf8.count))
        out.append(contentsOf: s.utf8)
    }

    public static func decode(_ body: UnsafeRawBufferPointer) throws(DecodeError) -> EventRecord {
        var r = ByteCursor(body)
        let flags = try r.u8()
        guard flags & ~63 == 0 else { throw DecodeError(reason: "unknown presence flags \(flags)") }
        let accepted = try r.u64()
        let sink = try r.string(Int(try r.u16()))
        let id = try r.string(Int(try r.u8()))
        var record = EventRecord(id: id, sink: sink, payload: [], acceptedAtMillis: accepted)
        if flags & 1 != 0 { record.workflowInstanceId = try r.string(Int(try r.u16())) }
        if flags & 2 != 0 { record.workflowType = try r.string(Int(try r.u16())) }
        if flags & 8 != 0 { record.correlationId = try r.string(Int(try r.u16())) }
        if flags & 16 != 0 { record.taskRefName = try r.string(Int(try r.u16())) }
        if flags & 4 != 0 { record.workflowVersion = Int64(bitPattern: try r.u64()) }
        if flags & 32 != 0 { record.priority = try r.u8() }
        record.payload = try r.bytes(Int(try r.u32()))
        guard r.remaining == 0 else { throw DecodeError(reason: "\(r.remaining) bytes after the payload") }
        return record
    }

    /// The sink and id only: what recovery and readers need to route a frame without copying its payload.
    public static func peekKey(
        _ body: UnsafeRawBufferPointer
    ) throws(DecodeError) -> (sink: UnsafeRawBufferPointer, id: UnsafeRawBufferPointer, acceptedAtMillis: UInt64) {
        var r = ByteCursor(body)
        _ = try r.u8()
        let accepted = try r.u64()
        let sink = try r.take(Int(try r.u16()))
        let id = try r.take(Int(try r.u8()))
        return (sink, id, accepted)
    }
}

/// Bounds-checked little-endian reads over a byte buffer.
struct ByteCursor {
    let buffer: UnsafeRawBufferPointer
    var offset = 0

    init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

    var remaining: Int { buffer.count - offset }

    mutating func take(_ n: Int) throws(RecordCodec.DecodeError) -> UnsafeRawBufferPointer {
        guard n >= 0, n <= remaining else {
            throw RecordCodec.DecodeError(
                reason: "field of \(n) bytes at offset \(offset) runs past the end (\(remaining) left)")
        }
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + n)])
    }

    mutating func u8() throws(RecordCodec.DecodeError) -> UInt8 { try take(1)[0] }
    mutating func u16() throws(RecordCodec.DecodeError) -> UInt16 {
        UInt16(littleEndian: try take(2).loadUnaligned(as: UInt16.self))
    }
    mutating func u32() throws(RecordCodec.DecodeError) -> UInt32 {
        UInt32(littleEndian: try take(4).loadUnaligned(as: UInt32.self))
    }
    mutating func u64() throws(RecordCodec.DecodeError) -> UInt64 {
        UInt64(littleEndian: try take(8).loadUnaligned(as: UInt64.self))
    }
    mutating func bytes(_ n: Int) throws(RecordCodec.DecodeError) -> [UInt8] { Array(try take(n)) }
    mutating func string(_ n: Int) throws(RecordCodec.DecodeError) -> String {
        let raw = try take(n)
        guard let s = String(validating: raw, as: UTF8.self) else {
            throw RecordCodec.DecodeError(reason: "a string field at offset \(offset - n) is not UTF-8")
        }
        return s
    }
}

extension Array where Element == UInt8 {
    @inline(__always) mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}
