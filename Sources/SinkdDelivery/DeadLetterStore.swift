#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SinkdCore
import SinkdWAL

/// Records that can never be delivered, kept for operators: `delivery.dead_letter.directory`,
/// one file per sink (`<sink, percent-encoded>.ndjson`), one JSON line per record with the whole
/// record, the sink, the last error, attempts, first and last attempt times. Appends are
/// fdatasynced before the records are marked finished in the WAL, so a dead letter is never lost.
public final class DeadLetterStore: @unchecked Sendable {
    public let directory: String
    private let lock = NSLock()

    public init(directory: String) throws(FileError) {
        self.directory = directory
        try FileIO.makeDirectories(directory)
        try FileIO.checkStateDirectory(directory)
    }

    public struct Entry: Sendable, Equatable {
        public var seq: UInt64
        public var record: EventRecord
        public var error: String
        public var attempts: Int
        public var firstAttemptMillis: UInt64?
        public var lastAttemptMillis: UInt64?
        public var deadLetteredMillis: UInt64

        public init(seq: UInt64, record: EventRecord, error: String, attempts: Int, firstAttemptMillis: UInt64?, lastAttemptMillis: UInt64?, deadLetteredMillis: UInt64) {
            self.seq = seq
            self.record = record
            self.error = error
            self.attempts = attempts
            self.firstAttemptMillis = firstAttemptMillis
            self.lastAttemptMillis = lastAttemptMillis
            self.deadLetteredMillis = deadLetteredMillis
        }
    }

    public static func fileName(for sink: String) -> String {
        var out = ""
        for b in sink.utf8 {
            let c = Character(Unicode.Scalar(b))
            if c.isASCII, c.isLetter || c.isNumber || c == "-" || c == "_" || c == "." {
                out.append(c)
            } else {
                out += "%" + String(b, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        // A file name has at most 255 bytes (NAME_MAX) and sink names may be longer (a conductor
        // sink with a long workflow type): keep a readable prefix and tell long names apart by a
        // hash of the whole name.
        if out.utf8.count > 200 {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a, 64 bit: stable across runs and builds
            for b in sink.utf8 {
                hash ^= UInt64(b)
                hash = hash &* 0x0000_0100_0000_01B3
            }
            out = String(out.utf8.prefix(180))! + "~" + String(hash, radix: 16).leftPadded(to: 16)
        }
        return out + ".ndjson"
    }

    /// Appends entries of one sink and makes them durable.
    public func append(sink: String, _ entries: [Entry]) throws(FileError) {
        guard !entries.isEmpty else { return }
        var bytes: [UInt8] = []
        for e in entries { Self.encode(e, into: &bytes) }
        let path = directory + "/" + Self.fileName(for: sink)
        lock.lock()
        defer { lock.unlock() }
        let fd = try FileIO.openForAppend(path, directory: directory)
        defer { close(fd) }
        try FileIO.writeAll(fd, bytes, path: path)
        try FileIO.dataSync(fd, path: path)
    }

    /// Every entry, optionally of one sink and within [since, until] (dead-letter time, millis).
    public func entries(sink: String? = nil, since: UInt64? = nil, until: UInt64? = nil) throws -> [Entry] {
        try files(sink: sink).flatMap { try read($0) }.filter { e in
            (since.map { e.deadLetteredMillis >= $0 } ?? true) && (until.map { e.deadLetteredMillis <= $0 } ?? true)
        }
    }

    /// Removes the entries matching the filter; returns how many. Each file is rewritten atomically.
    @discardableResult
    public func purge(sink: String? = nil, since: UInt64? = nil, until: UInt64? = nil, seqs: Set<UInt64>? = nil) throws -> Int {
        var removed = 0
        try lock.withLock {
            for file in try files(sink: sink) {
                let all = try read(file)
                let keep = all.filter { e in
                    let matches = (since.map { e.deadLetteredMillis >= $0 } ?? true) && (until.map { e.deadLetteredMillis <= $0 } ?? true)
                        && (seqs.map { $0.contains(e.seq) } ?? true)
                    return !matches
                }
                removed += all.count - keep.count
                if keep.count == all.count { continue }
                if keep.isEmpty {
                    try FileIO.unlink(file)
                    try FileIO.syncDirectory(directory)
                } else {
                    var bytes: [UInt8] = []
                    for e in keep { Self.encode(e, into: &bytes) }
                    try FileIO.replaceAtomically(file, with: bytes, directory: directory)
                }
            }
        }
        return removed
    }

    private func files(sink: String?) throws -> [String] {
        if let sink {
            let path = directory + "/" + Self.fileName(for: sink)
            return FileManager.default.fileExists(atPath: path) ? [path] : []
        }
        return try FileIO.listDirectory(directory).filter { $0.hasSuffix(".ndjson") }.map { directory + "/" + $0 }
    }

    private func read(_ path: String) throws -> [Entry] {
        let bytes = try FileIO.readFile(path)
        return bytes.split(separator: UInt8(ascii: "\n")).compactMap { Self.decode(Array($0)) }
    }

    // MARK: encoding

    public static func encode(_ e: Entry, into out: inout [UInt8]) {
        func string(_ name: String, _ value: String?) {
            guard let value else { return }
            out += Array(",\"\(name)\":".utf8)
            JSONText.appendString(value, to: &out)
        }
        out += Array(#"{"seq":\#(e.seq)"#.utf8)
        string("sink", e.record.sink)
        string("id", e.record.id)
        string("error", e.error)
        out += Array(",\"attempts\":\(e.attempts)".utf8)
        if let f = e.firstAttemptMillis { out += Array(",\"firstAttempt\":\(f)".utf8) }
        if let l = e.lastAttemptMillis { out += Array(",\"lastAttempt\":\(l)".utf8) }
        out += Array(",\"deadLettered\":\(e.deadLetteredMillis),\"acceptedAt\":\(e.record.acceptedAtMillis)".utf8)
        string("workflowInstanceId", e.record.workflowInstanceId)
        string("workflowType", e.record.workflowType)
        if let v = e.record.workflowVersion { out += Array(",\"workflowVersion\":\(v)".utf8) }
        string("correlationId", e.record.correlationId)
        string("taskRefName", e.record.taskRefName)
        if let p = e.record.priority { out += Array(",\"priority\":\(p)".utf8) }
        out += Array(#","payload":"#.utf8)
        out += e.record.payload
        out += Array("}\n".utf8)
    }

    static func decode(_ line: [UInt8]) -> Entry? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
              let seq = (object["seq"] as? NSNumber)?.uint64Value,
              let sink = object["sink"] as? String, let id = object["id"] as? String else { return nil }
        // The payload's own bytes: from the first `,"payload":` (earlier string fields are escaped
        // JSON and cannot contain it raw) up to the final `}`.
        let marker = Array(#","payload":"#.utf8)
        guard let start = firstRange(of: marker, in: line)?.upperBound, line.last == UInt8(ascii: "}") else { return nil }
        var record = EventRecord(id: id, sink: sink, payload: Array(line[start..<(line.count - 1)]))
        record.acceptedAtMillis = (object["acceptedAt"] as? NSNumber)?.uint64Value ?? 0
        record.workflowInstanceId = object["workflowInstanceId"] as? String
        record.workflowType = object["workflowType"] as? String
        record.workflowVersion = (object["workflowVersion"] as? NSNumber)?.int64Value
        record.correlationId = object["correlationId"] as? String
        record.taskRefName = object["taskRefName"] as? String
        record.priority = (object["priority"] as? NSNumber)?.uint8Value
        return Entry(seq: seq, record: record, error: object["error"] as? String ?? "", attempts: (object["attempts"] as? NSNumber)?.intValue ?? 0,
                     firstAttemptMillis: (object["firstAttempt"] as? NSNumber)?.uint64Value, lastAttemptMillis: (object["lastAttempt"] as? NSNumber)?.uint64Value,
                     deadLetteredMillis: (object["deadLettered"] as? NSNumber)?.uint64Value ?? 0)
    }

    private static func firstRange(of needle: [UInt8], in haystack: [UInt8]) -> Range<Int>? {
        guard haystack.count >= needle.count else { return nil }
        var i = 0
        while i + needle.count <= haystack.count {
            if haystack[i] == needle[0], Array(haystack[i..<(i + needle.count)]) == needle { return i..<(i + needle.count) }
            i += 1
        }
        return nil
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
