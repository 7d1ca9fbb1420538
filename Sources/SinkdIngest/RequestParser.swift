import SinkdCore

/// Parses one request line (without its newline) into a record whose `sink` is as sent: a strict JSON validator (RFC 8259) that
/// extracts the fields sinkd needs and keeps the payload's bytes as they are. I/O-free.
///
/// Limits: nesting depth 256; `id` 1-255 bytes; `sink` 1-1024 bytes; other string fields at most
/// 4096 bytes; no control character (C0, DEL, C1) in `id`, `sink` or a context field. Unknown
/// fields are validated as JSON and ignored.
public enum RequestParser {
    /// C0, DEL and C1: not allowed in `id`, `sink` and the context fields.
    static func isControl(_ s: Unicode.Scalar) -> Bool {
        s.value < 0x20 || (s.value >= 0x7F && s.value <= 0x9F)
    }

    public static let maxDepth = 256
    public static let maxSinkBytes = 1024
    public static let maxContextBytes = 4096

    public static func parse(_ line: UnsafeRawBufferPointer) -> Result<EventRecord, IngestRejection> {
        var p = JSONScanner(line)
        return p.parseRequest()
    }

    /// A request line as the ingest server reads it: a record, or a query (docs/PROTOCOL.md, "Queries").
    public static func parseLine(_ line: UnsafeRawBufferPointer) -> Result<IngestRequest, IngestRejection> {
        var p = JSONScanner(line)
        return p.parseLine()
    }

    public static func parseLine(_ line: [UInt8]) -> Result<IngestRequest, IngestRejection> {
        line.withUnsafeBytes { parseLine($0) }
    }

    /// The request line that `parse` reads back as `record` (its context fields, payload bytes
    /// as they are): for clients that hold a record, and for re-checking one as ingest would.
    public static func requestLine(for record: EventRecord) -> [UInt8] {
        var line: [UInt8] = Array(#"{"id":"#.utf8)
        JSONText.appendString(record.id, to: &line)
        line += Array(#","sink":"#.utf8)
        JSONText.appendString(record.sink, to: &line)
        for (key, value) in [
            ("workflowInstanceId", record.workflowInstanceId), ("workflowType", record.workflowType),
            ("correlationId", record.correlationId), ("taskRefName", record.taskRefName),
        ] {
            guard let value else { continue }
            line += Array(",\"\(key)\":".utf8)
            JSONText.appendString(value, to: &line)
        }
        if let v = record.workflowVersion { line += Array(",\"workflowVersion\":\(v)".utf8) }
        if let p = record.priority { line += Array(",\"priority\":\(p)".utf8) }
        line += Array(#","payload":"#.utf8) + record.payload + Array("}".utf8)
        return line
    }

    public static func parse(_ line: [UInt8]) -> Result<EventRecord, IngestRejection> {
        line.withUnsafeBytes { parse($0) }
    }
}
