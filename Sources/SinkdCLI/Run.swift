import ArgumentParser
import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOPosix
import Prometheus
import NIOConcurrencyHelpers
import ServiceLifecycle
import SinkdControl
import SinkdCore
import SinkdDelivery
import SinkdFileSink
import SinkdHTTPSink
import SinkdIngest
import SinkdAMQPSink
import SinkdConductorSink
import SinkdKafkaSink
import SinkdNATSSink
import SinkdRedisSink
import SinkdSQSSink
import SinkdSystemd
import SinkdWAL

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the daemon: accept records on the ingest socket and forward them to their sinks.",
        discussion:
            "Stops gracefully on SIGTERM or SIGINT: stops accepting, makes what it read durable and answers it, then exits 0."
    )

    @OptionGroup var options: ConfigOption

    @Option(
        help: ArgumentHelp(
            "Overrides log.level (trace, debug, info, notice, warning, error, critical).", valueName: "level"))
    var logLevel: LogLevel?

    func run() async throws {
        // Few malloc arenas: sinkd's threads allocate small buffers at a high rate, and glibc's
        // default (8 arenas per core) lets fragmentation, not data, decide the resident size.
        _ = glibcMallopt(-8 /* M_ARENA_MAX */, 2)
        // Sockets passed by systemd are taken first (and their variables cleared for children).
        let passed = ListenFDs.take()
        let config = try options.load()
        Redactor.shared.use(config)
        let logLevel = LogSetup.bootstrap(config.log, levelOverride: logLevel)
        // From here on SIGTERM/SIGINT mean "stop gracefully", and SIGHUP "reload", even while
        // sinkd is still starting (a reload waits until it runs).
        let notifier = SystemdNotifier()
        let stopSignals = StopSignals(notifier: notifier)
        let coordinator = NIOLockedValueBox<ReloadCoordinator?>(nil)
        let hangups = HangupSignals { coordinator.withLockedValue { $0 } }
        // Metrics are recorded from the first record on: the backend goes in before anything starts.
        let registry = config.metrics.listen.isEmpty ? nil : MetricsService.bootstrap()
        let logger = Logger(label: "sinkd")
        let sockets = ListenFDs.assign(passed)
        for unused in sockets.unused {
            logger.warning(
                "systemd passed a socket sinkd does not use; closing it",
                metadata: ["name": "\(unused.name)", "fd": "\(unused.fd)"])
            close(unused.fd)
        }
        let budget = DescriptorLimit.raiseAndBudget(config: config, logger: logger)
        guard budget.limit >= DescriptorBudget.minimumLimit else {
            let message =
                "the file-descriptor limit (RLIMIT_NOFILE) is \(budget.limit); sinkd needs at least \(DescriptorBudget.minimumLimit): raise LimitNOFILE= in the unit or `ulimit -n`"
            logger.critical("sinkd could not start", metadata: ["error": "\(message)"])
            notifier.status("could not start: \(message)")
            throw ExitCode(StateDirectoryError.exitStatus)
        }
        let daemon: Daemon
        do {
            daemon = try await Daemon.start(
                config: config, logger: logger, registry: registry, notifier: notifier, budget: budget,
                inherited: (sockets.ingest, sockets.control),
                reload: { await coordinator.withLockedValue { $0 }?.reload() })
        } catch let error as StateDirectoryError {
            // Restarting cannot help: systemd's RestartPreventExitStatus= names this status.
            logger.critical("sinkd could not start", metadata: ["error": "\(error)"])
            notifier.status("could not start: \(error)")
            throw ExitCode(StateDirectoryError.exitStatus)
        } catch {
            logger.critical("sinkd could not start", metadata: ["error": "\(error)"])
            notifier.status("could not start: \(error)")
            throw ExitCode(1)
        }
        coordinator.withLockedValue {
            $0 = ReloadCoordinator(
                configPath: options.path, daemon: daemon, notifier: notifier, logLevel: logLevel,
                levelOverride: self.logLevel, logger: logger)
        }
        try await daemon.run(stopSignals: stopSignals, hangups: hangups, notifier: notifier)
    }
}

extension LogLevel: ExpressibleByArgument {}

/// The running daemon: the WAL and the services around it, started in order and stopped in
/// reverse.
struct Daemon: Sendable {
    let config: SinkdConfig
    let logger: Logger
    let wal: WriteAheadLog
    let ingestContext: IngestContext
    let ingest: IngestService
    let delivery: DeliveryService
    let control: ControlService
    let metrics: MetricsService?
    /// Why the last reload failed, until one succeeds: STATUS= shows it (StatusLine).
    let reloadFailure = LastReloadFailure()

    static func start(
        config: SinkdConfig, logger: Logger, registry: PrometheusCollectorRegistry?,
        notifier: SystemdNotifier = SystemdNotifier(),
        budget: DescriptorBudget? = nil, inherited: (ingest: CInt?, control: CInt?) = (nil, nil),
        reload: (@Sendable () async -> ReloadOutcome?)? = nil
    ) async throws -> Daemon {
        let wal: WriteAheadLog
        do {
            // Recovery reads segment summaries, so it is normally quick; while it runs, systemd is
            // asked for more start-up time every 10 s so a large or damaged WAL is not killed.
            let recovering = StartupExtender(
                notifier: notifier, status: "recovering the write-ahead log in \(config.wal.directory)")
            defer { recovering.stop() }
            wal = try WriteAheadLog(options: WALOptions(config), logger: logger)
        } catch {
            throw StateDirectoryError(
                "cannot use the write-ahead log directory \(config.wal.directory): \(error). "
                    + (error.operation == "lock"
                        ? ""
                        : "Check that it is a directory the sinkd user owns and can write (systemd's StateDirectory= makes it so), then start sinkd again.")
            )
        }
        wal.start()
        let deadLetters: DeadLetterStore
        do {
            deadLetters = try DeadLetterStore(directory: config.delivery.deadLetterDirectory)
        } catch {
            wal.shutdown()
            throw DaemonError("cannot use the dead-letter directory \(config.delivery.deadLetterDirectory): \(error)")
        }
        let families = SinkFamilies.make(config, logger: logger)
        let delivery = DeliveryService(
            wal: wal, config: config, families: families, deadLetters: deadLetters, logger: logger,
            sinkLimit: budget?.sinks ?? .max)
        let state = ServerState()
        let shared = IngestContext(wal: wal, config: config, logger: logger, state: state)
        let source: ListenSource =
            inherited.ingest.map { .inherited(fd: $0, path: config.ingest.socket) }
            ?? .path(config.ingest.socket, mode: config.ingest.socketMode)
        let ingest = IngestService(
            shared: shared, config: config.ingest, source: source, group: MultiThreadedEventLoopGroup.singleton,
            connectionLimit: budget?.connections)
        var controlReload: (@Sendable () async -> ReloadOutcome)?
        if let reload {
            controlReload = { @Sendable in
                await reload()
                    ?? ReloadOutcome(
                        applied: false, generation: 1, messages: ["sinkd is still starting; retry in a moment"])
            }
        }
        let control = ControlService(
            config: config, wal: wal, delivery: delivery, deadLetters: deadLetters, ingestState: state, logger: logger,
            reload: controlReload)
        do {
            try await control.bind(inherited: inherited.control)
        } catch {
            wal.shutdown()
            throw DaemonError("cannot listen on the control socket \(config.control.socket): \(error)")
        }
        var metrics: MetricsService?
        if let registry, let listen = HostPort(config.metrics.listen) {
            let service = MetricsService(
                listen: listen, registry: registry, wal: wal, delivery: delivery, logger: logger)
            do {
                try await service.bind()
            } catch {
                wal.shutdown()
                throw DaemonError("cannot listen for metrics on \(config.metrics.listen): \(error)")
            }
            metrics = service
        }
        do {
            try await ingest.bind()
        } catch {
            wal.shutdown()
            throw DaemonError("cannot listen on \(config.ingest.socket): \(error)")
        }
        return Daemon(
            config: config, logger: logger, wal: wal, ingestContext: shared, ingest: ingest, delivery: delivery,
            control: control, metrics: metrics)
    }

    func run(
        stopSignals: StopSignals, hangups: HangupSignals? = nil, notifier: SystemdNotifier = SystemdNotifier()
    ) async throws {
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: stopSignals, successTerminationBehavior: .gracefullyShutdownGroup)
        ]
        if let interval = SystemdNotifier.watchdogInterval() {
            let loops = Array(MultiThreadedEventLoopGroup.singleton.makeIterator())
            services.append(
                .init(
                    service: WatchdogService(
                        interval: interval, loops: loops,
                        walWritingSince: { [wal] in wal.currentStats.writingSinceNanos },
                        now: { MonotonicClock.nanos() }, notifier: notifier, logger: logger)))
        }
        if let hangups { services.append(.init(service: hangups)) }
        if notifier.isActive { services.append(.init(service: StatusReporter(daemon: self, notifier: notifier))) }
        // Stopped in reverse: ingest first (no new records), then delivery (in-flight batches).
        services +=
            [.init(service: delivery), .init(service: control)] + (metrics.map { [.init(service: $0)] } ?? []) + [
                .init(service: ingest)
            ]
        let group = ServiceGroup(configuration: .init(services: services, logger: logger))
        logger.info(
            "sinkd started", metadata: ["version": "\(SinkdVersion.version)", "config": "\(config.sourcePath)"])
        notifier.ready(status: StatusLine.make(daemon: self))
        try await group.run()
        for family in delivery.allFamilies { await family.shutdown() }
        // Last: seal the active segment and save delivery progress.
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            BlockingThread.detach(name: "sinkd-wal-stop") { [wal] in
                wal.shutdown()
                done.resume()
            }
        }
        logger.info("sinkd stopped")
    }
}

/// While it lives, asks systemd for 30 s more start-up time every 10 s (EXTEND_TIMEOUT_USEC).
final class StartupExtender: Sendable {
    private let stopped = NIOLockedValueBox(false)

    init(notifier: SystemdNotifier, status: String) {
        guard notifier.isActive else { return }
        notifier.extendTimeout(microseconds: 30_000_000, status: status)
        let stopped = self.stopped
        BlockingThread.detach(name: "sinkd-startup") {
            var waited = 0
            while !stopped.withLockedValue({ $0 }) {
                usleep(100_000)
                waited += 1
                if waited % 100 == 0, !stopped.withLockedValue({ $0 }) {
                    notifier.extendTimeout(microseconds: 30_000_000, status: status)
                }
            }
        }
    }

    func stop() { stopped.withLockedValue { $0 = true } }
}

/// The process's file-descriptor limit: raised to the hard limit at start (systemd gives services
/// a soft 1024 and a hard 524288; shells often 1024 both), then shared out (DescriptorBudget).
enum DescriptorLimit {
    static func raiseAndBudget(config: SinkdConfig, logger: Logger) -> DescriptorBudget {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let before = limit.rlim_cur
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            // Beyond this no select()-free program needs more, and some kernels cap it (nr_open).
            raised.rlim_cur = min(limit.rlim_max, 1 << 20)
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        let current = Int(clamping: limit.rlim_cur)
        let budget = DescriptorBudget(limit: current, config: config)
        var metadata: Logger.Metadata = [
            "limit": "\(current)", "reserve": "\(budget.reserve)", "per_sink": "\(budget.perSink)",
        ]
        if before != limit.rlim_cur { metadata["raised_from"] = "\(before)" }
        if budget.lowers(maxConnections: config.ingest.maxConnections, maxSinks: config.delivery.maxSinks) {
            metadata["max_connections"] = "\(budget.connections) (configured \(config.ingest.maxConnections))"
            metadata["max_sinks"] = "\(budget.sinks) (configured \(config.delivery.maxSinks))"
            logger.warning(
                "the file-descriptor limit is too low for ingest.max_connections and delivery.max_sinks; both are lowered to fit (raise LimitNOFILE= or `ulimit -n`)",
                metadata: metadata)
        } else {
            logger.debug("file-descriptor budget", metadata: metadata)
        }
        return budget
    }
}

/// A state directory sinkd cannot use at all (not creatable, not writable, locked by another
/// sinkd): an operator must act, so the exit status is one the unit does not restart on.
struct StateDirectoryError: Error, CustomStringConvertible {
    /// EX_CONFIG; systemd/sinkd.service has RestartPreventExitStatus=78.
    static let exitStatus: Int32 = 78
    var description: String
    init(_ description: String) { self.description = description }
}

struct DaemonError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// glibc's mallopt(3); <malloc.h> is not part of Swift's Glibc module.
@_silgen_name("mallopt")
func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32

/// The sink families sinkd can deliver to, for the families the configuration enables.
enum SinkFamilies {
    /// The families `config` enables; those in `reusing` (running instances of unchanged
    /// sections, on a reload) are kept rather than created again.
    static func make(
        _ config: SinkdConfig, reusing: [ConfigFamily: any SinkFamily] = [:], logger: Logger
    ) -> [ConfigFamily: any SinkFamily] {
        var families: [ConfigFamily: any SinkFamily] = [:]
        let sinks = config.sinks
        for family in ConfigFamily.allCases {
            if let running = reusing[family], sinks.configuredFamilies.contains(family) {
                families[family] = running
                continue
            }
            // Exhaustive: a new family is a compile error here until it is made (docs/ADDING_A_SINK_FAMILY.md).
            let made: (any SinkFamily)? =
                switch family {
                case .file: sinks.file.map { FileSinkFamily(config: $0) }
                case .redis: sinks.redis.map { RedisSinkFamily(config: $0) }
                case .http: sinks.http.map { HTTPSinkFamily(config: $0) }
                case .sqs: sinks.sqs.map { SQSSinkFamily(config: $0, logger: logger) }
                case .conductor: sinks.conductor.map { ConductorSinkFamily(config: $0, logger: logger) }
                case .amqp: sinks.amqp.map { AMQPSinkFamily(config: $0, logger: logger) }
                case .nats: sinks.nats.map { NATSSinkFamily(config: $0, logger: logger) }
                case .kafka: sinks.kafka.map { KafkaSinkFamily(config: $0, logger: logger) }
                }
            if let made { families[family] = made }
        }
        return families
    }
}

/// SIGTERM and SIGINT, caught from the start of `sinkd run` (before any socket is bound), so that a
/// stop requested while sinkd is still starting is honoured gracefully once it runs: this service
/// returns on the first signal, and the group then shuts down gracefully.
final class StopSignals: Service, @unchecked Sendable {
    private let stream: AsyncStream<Int32>
    private let sources: [DispatchSourceSignal]
    private let notifier: SystemdNotifier

    init(notifier: SystemdNotifier = SystemdNotifier()) {
        self.notifier = notifier
        let (stream, continuation) = AsyncStream.makeStream(of: Int32.self)
        self.stream = stream
        sources = [SIGTERM, SIGINT].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            return source
        }
    }

    func run() async throws {
        for await number in stream.cancelOnGracefulShutdown() {
            notifier.stopping(
                status: "stopping (\(number == SIGTERM ? "SIGTERM" : "SIGINT")): finishing in-flight records")
            return
        }
    }
}
