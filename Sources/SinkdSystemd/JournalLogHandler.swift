import SinkdCore
import CSystemd
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization

/// swift-log events as structured journal entries, through sd_journal_sendv(3): MESSAGE,
/// PRIORITY, SYSLOG_IDENTIFIER, CODE_FILE/LINE/FUNC, and each metadata key as a field of its own
/// (`sink` → SINKD_SINK, `id` → SINKD_MESSAGE_ID, `seq` → SINKD_SEQ, `workflow_id` →
/// SINKD_WORKFLOW_ID, `error` → SINKD_ERROR, any other → SINKD_<KEY>), so that
/// `journalctl -u sinkd SINKD_SINK=sqs:orders` selects one sink's lines.
public struct JournalLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let level: LogLevelControl
    private var ownLevel: Logger.Level?
    let identifier: String

    public init(level: LogLevelControl, identifier: String = "sinkd") {
        self.level = level
        self.identifier = identifier
    }

    /// The shared, reloadable level unless a logger set its own.
    public var logLevel: Logger.Level {
        get { ownLevel ?? level.level }
        set { ownLevel = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields = metadata
        if let provided = metadataProvider?.get() { fields.merge(provided) { $1 } }
        if let extra = event.metadata { fields.merge(extra) { $1 } }
        var entries = [
            "MESSAGE="
                + LogText.escapingControls(Redactor.shared.redact(Self.messageText(event.message.description, fields))),
            "PRIORITY=\(Self.priority(event.level))",
            "SYSLOG_IDENTIFIER=" + identifier,
            "CODE_FILE=" + event.file,
            "CODE_LINE=\(event.line)",
            "CODE_FUNC=" + event.function,
        ]
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            entries.append(
                Self.fieldName(key) + "=" + LogText.escapingControls(Redactor.shared.redact(value.description)))
        }
        Self.send(entries)
    }

    /// MESSAGE: the event's message, led by its sink and followed by its error when it has them,
    /// so that `journalctl -u sinkd` (which shows MESSAGE only) says which sink and why
    /// (`http:audit: sink is down; ...: connection refused`). Both stay fields of their own too.
    public static func messageText(_ message: String, _ fields: Logger.Metadata) -> String {
        var text = message
        if let sink = fields["sink"]?.description, !sink.isEmpty { text = sink + ": " + text }
        if let error = fields["error"]?.description, !error.isEmpty { text += ": " + error }
        return text
    }

    /// syslog(3) priorities, as journald and `journalctl -p` use them.
    public static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    /// Journal field names are upper-case letters, digits and '_', not starting with '_'.
    public static func fieldName(_ key: String) -> String {
        switch key {
        case "sink": return "SINKD_SINK"
        case "id", "message_id": return "SINKD_MESSAGE_ID"
        case "seq": return "SINKD_SEQ"
        case "workflow_id", "workflowInstanceId": return "SINKD_WORKFLOW_ID"
        case "error": return "SINKD_ERROR"
        default:
            let cleaned = key.uppercased().map { c -> Character in
                c.isASCII && (c.isLetter || c.isNumber) ? c : "_"
            }
            return "SINKD_" + String(cleaned.prefix(58))
        }
    }

    static func send(_ entries: [String]) {
        // One buffer holds every field; the iovecs point into it while sd_journal_sendv runs.
        var storage: [UInt8] = []
        var spans: [(start: Int, count: Int)] = []
        for entry in entries {
            spans.append((storage.count, entry.utf8.count))
            storage.append(contentsOf: entry.utf8)
        }
        storage.withUnsafeMutableBytes { raw in
            let vectors = spans.map { iovec(iov_base: raw.baseAddress! + $0.start, iov_len: $0.count) }
            _ = sd_journal_sendv(vectors, Int32(vectors.count))
        }
    }
}

/// The log level every handler of the process follows, changed by a config reload.
public final class LogLevelControl: Sendable {
    // Read on every log call, so an atomic rather than a lock.
    private let index: Atomic<Int>

    public init(_ level: Logger.Level) { index = Atomic(Self.levels.firstIndex(of: level)!) }

    private static let levels = Logger.Level.allCases

    public var level: Logger.Level {
        get { Self.levels[index.load(ordering: .relaxed)] }
        set { index.store(Self.levels.firstIndex(of: newValue)!, ordering: .relaxed) }
    }
}

/// Whether stderr is connected to the journal: systemd sets JOURNAL_STREAM to "<dev>:<inode>" of
/// the stream it gave the service; it only counts if stderr is still that very stream.
public enum JournalStream {
    public static func stderrIsJournal(environment: [String: String] = SystemdEnvironment.current) -> Bool {
        guard let value = environment["JOURNAL_STREAM"] else { return false }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var st = stat()
        guard fstat(2, &st) == 0 else { return false }
        return UInt64(st.st_dev) == device && UInt64(st.st_ino) == inode
    }
}
