import Logging
import SinkdCore

/// At most one line per key every 10 s; the next says how many were suppressed.
public struct RateLimitedLog: Sendable {
    private var last: [String: (nanos: UInt64, suppressed: Int)] = [:]
    static let intervalNanos: UInt64 = 10_000_000_000

    public init() {}

    public mutating func log(
        _ logger: Logger, key: String, _ message: Logger.Message, level: Logger.Level = .error,
        metadata: Logger.Metadata = [:]
    ) {
        let now = MonotonicClock.nanos()
        if let entry = last[key], now - entry.nanos < Self.intervalNanos {
            last[key]!.suppressed += 1
            return
        }
        var metadata = metadata
        if let entry = last[key], entry.suppressed > 0 { metadata["suppressed_since_last"] = "\(entry.suppressed)" }
        last[key] = (now, 0)
        logger.log(level: level, message, metadata: metadata)
    }
}
