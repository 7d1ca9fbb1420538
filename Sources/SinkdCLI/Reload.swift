import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import SinkdControl
import SinkdCore
import SinkdDelivery
import SinkdIngest
import SinkdSystemd

/// Configuration reloads, from SIGHUP or `sinkd reload`: one at a time, and requests that arrive
/// while one runs coalesce into a single next one (all of them get its outcome).
///
/// A reload re-reads the file the daemon started with. Rejected (any error): nothing changes, each
/// error is logged, STATUS= says so. Accepted: RELOADING=1, then the parts that can change live
/// are applied (sink families and their settings, delivery retry and limits, `log.level`), then
/// READY=1. Settings that need a restart (sockets, WAL, metrics, log format, dedupe, dead-letter
/// directory) keep their running value, with a warning naming them.
actor ReloadCoordinator {
    private let configPath: String
    private let daemon: Daemon
    private let notifier: SystemdNotifier
    private let logLevel: LogLevelControl
    private let levelOverride: LogLevel?
    private let logger: Logger
    private var running = false
    private var queued: [CheckedContinuation<ReloadOutcome, Never>]?

    init(
        configPath: String, daemon: Daemon, notifier: SystemdNotifier, logLevel: LogLevelControl,
        levelOverride: LogLevel?, logger: Logger
    ) {
        self.configPath = configPath
        self.daemon = daemon
        self.notifier = notifier
        self.logLevel = logLevel
        self.levelOverride = levelOverride
        self.logger = logger
    }

    /// Reloads (or joins the reload queued next) and returns its outcome.
    func reload() async -> ReloadOutcome {
        if running {
            return await withCheckedContinuation { continuation in
                queued = (queued ?? []) + [continuation]
            }
        }
        running = true
        var outcome = reloadOnce()
        while let waiters = queued {
            queued = nil
            outcome = reloadOnce()
            for waiter in waiters { waiter.resume(returning: outcome) }
        }
        running = false
        return outcome
    }

    private func reloadOnce() -> ReloadOutcome {
        let current = daemon.delivery.generation
        logger.notice("reloading the configuration", metadata: ["config": "\(configPath)"])
        let config: SinkdConfig
        do {
            config = try ConfigLoader.load(path: configPath)
        } catch {
            for e in error.errors {
                logger.error(
                    "reload rejected: invalid configuration; sinkd keeps running on the old one",
                    metadata: ["error": "\(e.description)"])
            }
            let summary =
                "reload failed: \(error.errors.count) error\(error.errors.count == 1 ? "" : "s") in \(configPath) (\(error.errors.first?.description ?? "")); running generation \(current.number)"
            daemon.reloadFailure.set(summary)
            notifier.status(StatusLine.make(daemon: daemon))
            return ReloadOutcome(applied: false, generation: current.number, messages: error.errors.map(\.description))
        }
        notifier.reloading()
        var warnings: [String] = []
        for name in Self.restartOnlyChanges(from: current.config, to: config) {
            let warning = "\(name) changed; it takes effect at the next restart (the running value is kept)"
            warnings.append(warning)
            logger.warning("reload: a setting needs a restart", metadata: ["setting": "\(name)"])
        }
        // Unchanged sections keep their running family (and its connections).
        let unchanged = current.families.filter { config.sinks.sameSection($0.key, as: current.config.sinks) }
        let families = SinkFamilies.make(config, reusing: unchanged, logger: logger)
        var effective = config
        Self.keepRestartOnly(from: current.config, in: &effective)
        logLevel.level = (levelOverride ?? config.log.level).swiftLogLevel
        Redactor.shared.use(config, current.config)
        daemon.ingestContext.updateSinks(config.sinks)
        let number = daemon.delivery.apply(config: effective, families: families)
        let added = Set(families.keys).subtracting(current.families.keys).map(\.rawValue).sorted()
        let removed = Set(current.families.keys).subtracting(families.keys).map(\.rawValue).sorted()
        logger.notice(
            "configuration reloaded",
            metadata: [
                "generation": "\(number)", "added": "\(added.joined(separator: ","))",
                "removed": "\(removed.joined(separator: ","))",
            ])
        daemon.reloadFailure.set(nil)
        notifier.ready(status: StatusLine.make(daemon: daemon))
        return ReloadOutcome(applied: true, generation: number, messages: warnings)
    }

    /// A setting a running sinkd cannot change: its config key, and how the running value is
    /// kept in a reloaded configuration. The one list both the warning and the keeping read, so
    /// a restart-only setting cannot be warned about and then applied, or the reverse.
    struct RestartOnly: Sendable {
        let key: String
        let keep: @Sendable (_ running: SinkdConfig, _ reloaded: inout SinkdConfig) -> Void
    }

    static let restartOnly: [RestartOnly] = [
        RestartOnly(key: "ingest") { $1.ingest = $0.ingest },
        RestartOnly(key: "control") { $1.control = $0.control },
        RestartOnly(key: "wal") { $1.wal = $0.wal },
        RestartOnly(key: "metrics") { $1.metrics = $0.metrics },
        RestartOnly(key: "log.format") { $1.log.format = $0.log.format },
        RestartOnly(key: "delivery.dedupe") {
            $1.delivery.dedupeWindow = $0.delivery.dedupeWindow
            $1.delivery.dedupeMaxEntries = $0.delivery.dedupeMaxEntries
        },
        RestartOnly(key: "delivery.dead_letter.directory") {
            $1.delivery.deadLetterDirectory = $0.delivery.deadLetterDirectory
        },
    ]

    /// Settings a running sinkd cannot change that differ in `new`, by their config key.
    static func restartOnlyChanges(from old: SinkdConfig, to new: SinkdConfig) -> [String] {
        restartOnly.filter { setting in
            var kept = new
            setting.keep(old, &kept)
            return kept != new
        }.map(\.key)
    }

    /// `new` with every restart-only setting as it is in `old`.
    static func keepRestartOnly(from old: SinkdConfig, in new: inout SinkdConfig) {
        for setting in restartOnly { setting.keep(old, &new) }
    }
}

/// SIGHUP asks for a reload (caught from the start of `sinkd run`; one at a time, coalesced).
final class HangupSignals: Service, @unchecked Sendable {
    private let stream: AsyncStream<Void>
    private let source: DispatchSourceSignal
    private let coordinator: @Sendable () -> ReloadCoordinator?

    init(coordinator: @escaping @Sendable () -> ReloadCoordinator?) {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.stream = stream
        self.coordinator = coordinator
        signal(SIGHUP, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        source.setEventHandler { continuation.yield() }
        source.resume()
    }

    func run() async throws {
        for await _ in stream.cancelOnGracefulShutdown() {
            _ = await coordinator()?.reload()
        }
    }
}

/// The one-line summary systemd shows (STATUS=): sinks, how many are down, backlog, WAL size.
enum StatusLine {
    static func make(daemon: Daemon) -> String {
        let snapshots = daemon.delivery.snapshots
        let backlog = daemon.wal.backlog()
        let sinks = Set(snapshots.map(\.sink)).union(backlog.keys).count
        let down = snapshots.filter { $0.state == .down }.count
        let records = backlog.values.reduce(0) { $0 + $1.records }
        let stats = daemon.wal.currentStats
        let downText = down > 0 ? " (\(down) down)" : ""
        let diskFull = stats.diskFullSinceMillis > 0 ? ", WAL DISK FULL (clients wait)" : ""
        // A failed reload stays in the line (the periodic update keeps it) until a reload succeeds.
        let reload = daemon.reloadFailure.get().map { "\($0); " } ?? ""
        return
            "\(reload)\(sinks) sink\(sinks == 1 ? "" : "s")\(downText), backlog \(grouped(records)) record\(records == 1 ? "" : "s"), WAL \(Units.formatSize(stats.bytes))\(diskFull)"
    }

    static func grouped(_ n: UInt64) -> String {
        let digits = Array(String(n))
        var out = ""
        for (i, d) in digits.enumerated() {
            if i > 0, (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(d)
        }
        return out
    }
}

/// The reason the last reload failed, shared by the reloader and the status line.
final class LastReloadFailure: Sendable {
    private let box = NIOLockedValueBox<String?>(nil)
    func set(_ reason: String?) { box.withLockedValue { $0 = reason } }
    func get() -> String? { box.withLockedValue { $0 } }
}

/// Keeps STATUS= current while systemd listens.
final class StatusReporter: Service, Sendable {
    let daemon: Daemon
    let notifier: SystemdNotifier
    let period: Duration

    init(daemon: Daemon, notifier: SystemdNotifier, period: Duration = .seconds(5)) {
        self.daemon = daemon
        self.notifier = notifier
        self.period = period
    }

    func run() async throws {
        guard notifier.isActive else {
            try? await gracefulShutdown()  // returning early would end the whole service group
            return
        }
        var last = ""
        while !Task.isShuttingDownGracefully {
            let line = StatusLine.make(daemon: daemon)
            if line != last {
                notifier.status(line)
                last = line
            }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: self.period) }
            } catch {
                return
            }
        }
    }
}
