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

        public init(
            seq: UInt64, record: EventRecord, error: String, attempts: Int, firstAttemptMillis: UInt64?,
            lastAttemptMillis: UInt64?, deadLetteredMillis: UInt64
        ) {
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
        for var e in entries {
            e.error = Redactor.shared.redact(e.error)  // a reason may quote a URL or a remote's echo
            Self.encode(e, into: &bytes)
        }
        let path = directory + "/" + Self.fileName(for: sink)
        lock.lock()
        defer { lock.unlock() }
        let fd = try FileIO.openForAppend(path, directory: directory)
        defer { close(fd) }
        try FileIO.writeAll(fd, bytes, path: path)
        try FileIO.dataSync(fd, path: path)
    }

    /// Every entry, optionally of one sink and within [since, until] (dead-letter time, millis).
    /// Holds them all: for tests and small stores; the tools stream with `forEachEntry`.
    public func entries(sink: String? = nil, since: UInt64? = nil, until: UInt64? = nil) throws -> [Entry] {
        var out: [Entry] = []
        try forEachEntry(sink: sink, since: since, until: until) {
            out.append($0); return true
        }
        return out
    }

    /// Calls `body` with each matching entry, file by file (sink by sink), each file in the order
    /// written (oldest first), reading one line at a time. `body` returns false to stop.
    public func forEachEntry(
        sink: String? = nil, since: UInt64? = nil, until: UInt64? = nil, _ body: (Entry) throws -> Bool
    ) throws {
        for file in try files(sink: sink) {
            var stopped = false
            try FileIO.forEachLine(file) { line in
                guard let e = Self.decode(Array(line)), Self.matches(e, since: since, until: until, seqs: nil) else {
                    return true
                }
                stopped = try !body(e)
                return !stopped
            }
            if stopped { return }
        }
    }

    static func matches(_ e: Entry, since: UInt64?, until: UInt64?, seqs: Set<UInt64>?) -> Bool {
        (since.map { e.deadLetteredMillis >= $0 } ?? true) && (until.map { e.deadLetteredMillis <= $0 } ?? true)
            && (seqs.map { $0.contains(e.seq) } ?? true)
    }

    /// Removes the entries matching the filter; returns how many. Each file is rewritten
    /// atomically, streamed: the lines kept are copied as they are into a new file (exclusive
    /// create, no link followed), synced, renamed over the old one, and the directory synced.
    @discardableResult
    public func purge(
        sink: String? = nil, since: UInt64? = nil, until: UInt64? = nil, seqs: Set<UInt64>? = nil
    ) throws -> Int {
        var removed = 0
        try lock.withLock {
            for file in try files(sink: sink) {
                let temporary = file + ".tmp"
                try FileIO.unlink(temporary)
                let fd = try FileIO.open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW)
                var kept = 0
                var removedHere = 0
                var buffer: [UInt8] = []
                do {
                    try FileIO.forEachLine(file) { line in
                        if let e = Self.decode(Array(line)), Self.matches(e, since: since, until: until, seqs: seqs) {
                            removedHere += 1
                            return true
                        }
                        guard !line.isEmpty else { return true }
                        kept += 1
                        buffer += line
                        buffer.append(UInt8(ascii: "\n"))
                        if buffer.count >= 1 << 20 {
                            try FileIO.writeAll(fd, buffer, path: temporary)
                            buffer.removeAll(keepingCapacity: true)
                        }
                        return true
                    }
                    try FileIO.writeAll(fd, buffer, path: temporary)
                    try FileIO.dataSync(fd, path: temporary)
                } catch {
                    close(fd)
                    try? FileIO.unlink(temporary)
                    throw error
                }
                close(fd)
                removed += removedHere
                if removedHere == 0 {
                    try FileIO.unlink(temporary)
                } else if kept == 0 {
                    try FileIO.unlink(temporary)
                    try FileIO.unlink(file)
                    try FileIO.syncDirectory(directory)
                } else {
                    try FileIO.rename(temporary, file)
                    try FileIO.syncDirectory(directory)
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
            let sink = object["sink"] as? String, let id = object["id"] as? String
        else { return nil }
        // The payload's own bytes: from the first `,"payload":` (earlier string fields are escaped
        // JSON and cannot contain it raw) up to the final `}`.
        let marker = Array(#","payload":"#.utf8)
        guard let start = firstRange(of: marker, in: line)?.upperBound, line.last == UInt8(ascii: "}") else {
            return nil
        }
        var record = EventRecord(id: id, sink: sink, payload: Array(line[start..<(line.count - 1)]))
        record.acceptedAtMillis = (object["acceptedAt"] as? NSNumber)?.uint64Value ?? 0
        record.workflowInstanceId = object["workflowInstanceId"] as? String
        record.workflowType = object["workflowType"] as? String
        record.workflowVersion = (object["workflowVersion"] as? NSNumber)?.int64Value
        record.correlationId = object["correlationId"] as? String
        record.taskRefName = object["taskRefName"] as? String
        record.priority = (object["priority"] as? NSNumber)?.uint8Value
        return Entry(
            seq: seq, record: record, error: object["error"] as? String ?? "",
            attempts: (object["attempts"] as? NSNumber)?.intValue ?? 0,
            firstAttemptMillis: (object["firstAttempt"] as? NSNumber)?.uint64Value,
            lastAttemptMillis: (object["lastAttempt"] as? NSNumber)?.uint64Value,
            deadLetteredMillis: (object["deadLettered"] as? NSNumber)?.uint64Value ?? 0)
    }

    private static func firstRange(of needle: [UInt8], in haystack: [UInt8]) -> Range<Int>? {
        guard haystack.count >= needle.count else { return nil }
        var i = 0
        while i + needle.count <= haystack.count {
            if haystack[i] == needle[0], Array(haystack[i..<(i + needle.count)]) == needle {
                return i..<(i + needle.count)
            }
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
