import Foundation
import Yams

/// Reads sinkd's YAML configuration (schema v1) into a `SinkdConfig`.
///
/// Decoding walks the YAML node tree rather than using `Decodable`, because `Decodable` stops at
/// the first error and loses line and column: here every error of the file is reported at once,
/// each with its position and key path.
public enum ConfigLoader {
    public static let defaultPath = "/etc/sinkd/sinkd.yaml"

    /// `--config`, else `$SINKD_CONFIG`, else /etc/sinkd/sinkd.yaml.
    public static func resolvePath(flag: String?, environment: [String: String]) -> String {
        if let flag, !flag.isEmpty { return flag }
        if let env = environment["SINKD_CONFIG"], !env.isEmpty { return env }
        return defaultPath
    }

    public static func load(
        path: String, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ConfigErrors) -> SinkdConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason: String
            if FileManager.default.fileExists(atPath: path) {
                reason = "cannot be read (check its permissions)"
            } else {
                reason =
                    "does not exist (pass --config PATH or set SINKD_CONFIG; Config/sinkd.yaml is a documented starting point)"
            }
            throw ConfigErrors([ConfigError(file: path, keyPath: "", message: "the configuration file \(reason)")])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigErrors([
                ConfigError(file: path, keyPath: "", message: "the configuration file is not UTF-8 text")
            ])
        }
        return try parse(yaml: text, file: path, environment: environment)
    }

    /// The control socket a configuration file names, read leniently: whatever else in the file
    /// is wrong (`sinkd reload` must reach the daemon to have it reject an invalid file, so that
    /// the daemon logs it and says so in STATUS=). The default when the file names none or cannot
    /// be read.
    public static func controlSocket(path: String) -> String {
        let fallback = SinkdConfig().control.socket
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8),
            let root = (try? Yams.compose(yaml: text)) ?? nil, case .mapping(let top) = root,
            case .mapping(let control)? = top["control"], case .scalar(let socket)? = control["socket"]
        else { return fallback }
        return socket.string.isEmpty ? fallback : socket.string
    }

    public static func parse(
        yaml: String,
        file: String,
        environment: [String: String],
        workingDirectory: String = FileManager.default.currentDirectoryPath
    ) throws(ConfigErrors) -> SinkdConfig {
        let diagnostics = ConfigDiagnostics(file: file, secrets: SecretResolver(environment: environment))
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            throw ConfigErrors([syntaxError(error, file: file)])
        } catch {
            throw ConfigErrors([ConfigError(file: file, keyPath: "", message: "YAML syntax error: \(error)")])
        }
        var config = SinkdConfig()
        config.sourcePath = file
        let top = ConfigSection(root, path: "", diagnostics: diagnostics)
        let paths = PathResolver(workingDirectory: workingDirectory)
        readIngest(top.section("ingest"), into: &config.ingest, paths: paths)
        let control = top.section("control")
        config.control.socket = paths.absolute(
            control.readingAll { $0.string("socket", default: config.control.socket) })
        let wal = top.section("wal")
        readWAL(wal, into: &config.wal, paths: paths)
        readDelivery(top.section("delivery"), into: &config.delivery, paths: paths)
        top.section("log").readingAll { log in
            config.log.level = log.choice("level", default: config.log.level)
            config.log.format = log.choice("format", default: config.log.format)
        }
        top.section("metrics").readingAll { metrics in
            config.metrics.listen = metrics.value(
                "listen", default: "", expected: "\"HOST:PORT\" or \"\"",
                { text in
                    text.isEmpty || HostPort(text) != nil ? text : nil
                })
        }
        config.sinks = SinksReader(section: top.section("sinks"), delivery: config.delivery, paths: paths).read()
        top.finish()
        if diagnostics.errors.isEmpty {
            crossCheck(config, wal: wal, control: control)
        }
        guard diagnostics.errors.isEmpty else {
            throw ConfigErrors(
                diagnostics.errors.sorted { ($0.line ?? 0, $0.column ?? 0) < ($1.line ?? 0, $1.column ?? 0) })
        }
        config.secretValues = diagnostics.secretValues
        return config
    }

    private static func syntaxError(_ error: YamlError, file: String) -> ConfigError {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _),
            .composer(_, let problem, let mark, _):
            return ConfigError(
                file: file, line: mark.line, column: mark.column, keyPath: "", message: "YAML syntax error: \(problem)")
        case .duplicatedKeysInMapping(let duplicates, _):
            return ConfigError(
                file: file, keyPath: "",
                message: "YAML error: key(s) \(duplicates.joined(separator: ", ")) appear more than once in one mapping"
            )
        default:
            return ConfigError(file: file, keyPath: "", message: "YAML error: \(error)")
        }
    }

    // MARK: sections

    private static func readIngest(_ s: ConfigSection, into c: inout IngestConfig, paths: PathResolver) {
        s.readingAll { s in
            c.socket = paths.absolute(s.string("socket", default: c.socket))
            c.socketMode = s.value("socket_mode", default: c.socketMode, expected: "an octal file mode like \"0660\"") {
                text in
                guard (3...4).contains(text.count), let mode = UInt32(text, radix: 8), mode <= 0o777 else { return nil }
                return mode
            }
            c.maxRecordBytes = s.size("max_record_bytes", default: c.maxRecordBytes)
            c.maxRecordBytes = s.checkRange(
                "max_record_bytes", c.maxRecordBytes, 256...(64 << 20), fallback: c.maxRecordBytes)
            c.maxConnections = s.int("max_connections", default: c.maxConnections, range: 1...65_536)
            c.maxUnansweredBytes = s.size("max_unanswered_bytes", default: c.maxUnansweredBytes)
            c.maxUnansweredBytes = s.checkRange(
                "max_unanswered_bytes", c.maxUnansweredBytes, (4 << 10)...(64 << 20), fallback: c.maxUnansweredBytes)
            c.idleTimeout = s.duration("idle_timeout", default: c.idleTimeout)
            c.allowedUIDs = s.list("allowed_uids", default: [], expected: "a numeric user id") { UInt32($0) }
            c.allowedGIDs = s.list("allowed_gids", default: [], expected: "a numeric group id") { UInt32($0) }
        }
    }

    private static func readWAL(_ s: ConfigSection, into c: inout WALConfig, paths: PathResolver) {
        s.readingAll { s in
            c.directory = paths.absolute(s.string("directory", default: c.directory))
            c.segmentSize = s.size("segment_size", default: c.segmentSize)
            c.maxSize = s.size("max_size", default: c.maxSize)
            c.fsync = s.choice("fsync", default: c.fsync)
            c.fsyncInterval = s.duration("fsync_interval", default: c.fsyncInterval)
            c.whenFull = s.choice("when_full", default: c.whenFull)
            if c.fsync == .interval, c.fsyncInterval == .zero {
                s.diagnostics.report(
                    s.child("fsync_interval"), at: s.node("fsync_interval")?.mark ?? s.mark,
                    "must be greater than 0s when wal.fsync is interval")
            }
        }
    }

    static func readRetry(_ s: ConfigSection, base: RetryPolicy) -> RetryPolicy {
        var r = base
        s.readingAll { s in
            r.initialBackoff = s.duration("initial_backoff", default: r.initialBackoff)
            r.maxBackoff = s.duration("max_backoff", default: r.maxBackoff)
            r.multiplier = s.double("multiplier", default: r.multiplier, range: 1.0...100.0)
            r.maxAttempts = s.int("max_attempts", default: r.maxAttempts, range: 0...1_000_000)
            r.maxAge = s.duration("max_age", default: r.maxAge)
            if r.initialBackoff == .zero {
                s.diagnostics.report(
                    s.child("initial_backoff"), at: s.node("initial_backoff")?.mark ?? s.mark, "must be greater than 0s"
                )
            }
            if r.maxBackoff < r.initialBackoff {
                s.diagnostics.report(
                    s.child("max_backoff"), at: s.node("max_backoff")?.mark ?? s.mark,
                    "must be at least initial_backoff (\(Units.formatDuration(r.initialBackoff))), got \(Units.formatDuration(r.maxBackoff))"
                )
            }
        }
        return r
    }

    private static func readDelivery(_ s: ConfigSection, into c: inout DeliveryConfig, paths: PathResolver) {
        s.readingAll { s in
            c.dedupeWindow = s.duration("dedupe_window", default: c.dedupeWindow)
            c.dedupeMaxEntries = s.int("dedupe_max_entries", default: c.dedupeMaxEntries, range: 0...100_000_000)
            c.shutdownTimeout = s.duration("shutdown_timeout", default: c.shutdownTimeout)
            c.maxSinks = s.int("max_sinks", default: c.maxSinks, range: 1...1_000_000)
            c.maxHeldBytesPerSink = s.size("max_held_bytes_per_sink", default: c.maxHeldBytesPerSink)
            c.maxHeldBytesPerSink = s.checkRange(
                "max_held_bytes_per_sink", c.maxHeldBytesPerSink, (64 << 10)...(64 << 30),
                fallback: c.maxHeldBytesPerSink)
            c.maxHeldBytes = s.size("max_held_bytes", default: c.maxHeldBytes)
            c.maxHeldBytes = s.checkRange(
                "max_held_bytes", c.maxHeldBytes, (1 << 20)...(1 << 40), fallback: c.maxHeldBytes)
            c.retry = readRetry(s.section("retry"), base: c.retry)
            s.section("dead_letter").readingAll { d in
                c.deadLetterDirectory = paths.absolute(d.string("directory", default: c.deadLetterDirectory))
            }
        }
    }

    /// Rules that involve more than one key, checked once every key on its own is valid.
    private static func crossCheck(_ c: SinkdConfig, wal: ConfigSection, control: ConfigSection) {
        if c.wal.segmentSize < 2 * c.ingest.maxRecordBytes {
            wal.diagnostics.report(
                "wal.segment_size", at: wal.node("segment_size")?.mark ?? wal.mark,
                "must be at least twice ingest.max_record_bytes (\(Units.formatSize(2 * c.ingest.maxRecordBytes))), got \(Units.formatSize(c.wal.segmentSize))"
            )
        }
        if c.wal.maxSize < 2 * c.wal.segmentSize {
            wal.diagnostics.report(
                "wal.max_size", at: wal.node("max_size")?.mark ?? wal.mark,
                "must be at least twice wal.segment_size (\(Units.formatSize(2 * c.wal.segmentSize))), got \(Units.formatSize(c.wal.maxSize))"
            )
        }
        if c.ingest.socket == c.control.socket {
            control.diagnostics.report(
                "control.socket", at: control.node("socket")?.mark ?? control.mark,
                "must differ from ingest.socket (\(c.ingest.socket))")
        }
    }
}

extension ConfigSection {
    /// Runs `body` on this section, then reports its unknown keys.
    @discardableResult
    func readingAll<T>(_ body: (ConfigSection) -> T) -> T {
        let result = body(self)
        finish()
        return result
    }
}

/// Relative paths in the configuration are taken from the directory sinkd was started in.
struct PathResolver {
    let workingDirectory: String

    func absolute(_ path: String) -> String {
        if path.hasPrefix("/") || path.isEmpty { return path }
        var p = Substring(path)
        while p.hasPrefix("./") { p = p.dropFirst(2) }
        return workingDirectory.hasSuffix("/") ? workingDirectory + p : workingDirectory + "/" + p
    }
}

/// "HOST:PORT" or "[IPv6]:PORT".
public struct HostPort: Sendable, Equatable {
    public var host: String
    public var port: Int

    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(text[text.index(after: colon)...]), (1...65_535).contains(port) else {
            return nil
        }
        self.host = host
        self.port = port
    }
}
