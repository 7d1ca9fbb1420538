#if canImport(Glibc)
import Glibc
#endif
import Logging
import SinkdCore
import SinkdIngest
import SinkdSystemd

/// Log lines on stderr, one per event: logfmt (`ts=… level=info msg="…" key=value`) or JSON
/// objects. One write(2) per line so concurrent lines never interleave.
struct StderrLogHandler: LogHandler {
    enum Format: Sendable { case logfmt, json }

    let label: String
    let format: Format
    private let level: LogLevelControl
    private var ownLevel: Logger.Level?
    var metadata: Logger.Metadata = [:]

    init(label: String, format: Format, level: LogLevelControl) {
        self.label = label
        self.format = format
        self.level = level
    }

    /// The shared, reloadable level unless a logger set its own.
    var logLevel: Logger.Level {
        get { ownLevel ?? level.level }
        set { ownLevel = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields = metadata
        if let extra = event.metadata { fields.merge(extra) { $1 } }
        let timestamp = Self.timestamp()
        var line: String
        switch format {
        case .logfmt:
            line =
                "ts=\(timestamp) level=\(event.level) msg=\(Self.logfmtValue(Redactor.shared.redact(event.message.description)))"
            for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
                line += " \(key)=\(Self.logfmtValue(Redactor.shared.redact(value.description)))"
            }
        case .json:
            var bytes: [UInt8] = []
            bytes.append(contentsOf: #"{"ts":"#.utf8)
            JSONText.appendString(timestamp, to: &bytes)
            bytes.append(contentsOf: #","level":"#.utf8)
            JSONText.appendString("\(event.level)", to: &bytes)
            bytes.append(contentsOf: #","msg":"#.utf8)
            JSONText.appendString(Redactor.shared.redact(event.message.description), to: &bytes)
            for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
                bytes.append(UInt8(ascii: ","))
                JSONText.appendString(key, to: &bytes)
                bytes.append(UInt8(ascii: ":"))
                JSONText.appendString(Redactor.shared.redact(value.description), to: &bytes)
            }
            bytes.append(UInt8(ascii: "}"))
            line = String(decoding: bytes, as: UTF8.self)
        }
        line += "\n"
        var data = Array(line.utf8)
        data.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(2, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 { if errno == EINTR { continue } else { return } }
                offset += n
            }
        }
    }

    /// A logfmt value: quoted when it holds a space, `=`, a quote, or anything `LogText` escapes;
    /// every control character escaped, so no remote text can start a line of its own.
    static func logfmtValue(_ s: String) -> String {
        let needsQuotes =
            s.isEmpty
            || s.unicodeScalars.contains(where: {
                $0 == " " || $0 == "=" || $0 == "\"" || $0 == "\\" || LogText.isControl($0)
            })
        guard needsQuotes else { return s }
        return "\"" + LogText.escapingControls(s, also: ["\"", "\\"]) + "\""
    }

    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = time_t(ts.tv_sec)
        var tm = tm()
        gmtime_r(&t, &tm)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return
            "\(pad(tm.tm_year + 1900, 4))-\(pad(tm.tm_mon + 1, 2))-\(pad(tm.tm_mday, 2))T\(pad(tm.tm_hour, 2)):\(pad(tm.tm_min, 2)):\(pad(tm.tm_sec, 2)).\(pad(Int32(ts.tv_nsec / 1_000_000), 3))Z"
    }
}

extension LogLevel {
    var swiftLogLevel: Logger.Level {
        switch self {
        case .trace: .trace
        case .debug: .debug
        case .info: .info
        case .notice: .notice
        case .warning: .warning
        case .error: .error
        case .critical: .critical
        }
    }
}

enum LogSetup {
    /// Sets up swift-log once for the process from `log.level` / `log.format` (and `--log-level`):
    /// the journal when `log.format` is journal, or auto and stderr is the journal stream systemd
    /// gave us (JOURNAL_STREAM); otherwise lines on stderr. Returns the level a reload changes.
    @discardableResult
    static func bootstrap(_ config: LogConfig, levelOverride: LogLevel?) -> LogLevelControl {
        let level = LogLevelControl((levelOverride ?? config.level).swiftLogLevel)
        switch destination(config.format, stderrIsJournal: JournalStream.stderrIsJournal()) {
        case .journal:
            LoggingSystem.bootstrap { _ in JournalLogHandler(level: level) }
        case .stderr(let format):
            LoggingSystem.bootstrap { label in StderrLogHandler(label: label, format: format, level: level) }
        }
        return level
    }

    enum Destination: Equatable {
        case journal
        case stderr(StderrLogHandler.Format)
    }

    static func destination(_ format: LogFormat, stderrIsJournal: Bool) -> Destination {
        switch format {
        case .journal: .journal
        case .json: .stderr(.json)
        case .logfmt: .stderr(.logfmt)
        case .auto: stderrIsJournal ? .journal : .stderr(.logfmt)
        }
    }
}
