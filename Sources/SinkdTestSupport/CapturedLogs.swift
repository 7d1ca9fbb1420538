import Logging
import NIOConcurrencyHelpers

/// Log events kept in memory, to check what sinkd logs (and how often).
public final class CapturedLogs: Sendable {
    public typealias Entry = (level: Logger.Level, message: String, metadata: Logger.Metadata)
    private let box = NIOLockedValueBox<[Entry]>([])

    public init() {}

    public var entries: [Entry] { box.withLockedValue { $0 } }

    public func messages(at level: Logger.Level) -> [String] { entries.filter { $0.level == level }.map(\.message) }

    public func logger(level: Logger.Level = .trace) -> Logger {
        Logger(label: "sinkd.test.captured") { _ in Handler(logs: self, logLevel: level) }
    }

    struct Handler: LogHandler {
        let logs: CapturedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level
        init(logs: CapturedLogs, logLevel: Logger.Level) {
            self.logs = logs
            self.logLevel = logLevel
        }
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            logs.box.withLockedValue { $0.append((event.level, event.message.description, merged)) }
        }
    }
}
