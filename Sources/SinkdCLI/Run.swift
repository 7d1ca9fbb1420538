import ArgumentParser
import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOPosix
import Prometheus
import ServiceLifecycle
import SinkdControl
import SinkdCore
import SinkdDelivery
import SinkdFileSink
import SinkdHTTPSink
import SinkdIngest
import SinkdRedisSink
import SinkdWAL

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the daemon: accept records on the ingest socket and forward them to their sinks.",
        discussion: "Stops gracefully on SIGTERM or SIGINT: stops accepting, makes what it read durable and answers it, then exits 0."
    )

    @OptionGroup var options: ConfigOption

    @Option(help: ArgumentHelp("Overrides log.level (trace, debug, info, notice, warning, error, critical).", valueName: "level"))
    var logLevel: LogLevel?

    func run() async throws {
        // Few malloc arenas: sinkd's threads allocate small buffers at a high rate, and glibc's
        // default (8 arenas per core) lets fragmentation, not data, decide the resident size.
        _ = glibcMallopt(-8 /* M_ARENA_MAX */, 2)
        let config = try options.load()
        LogSetup.bootstrap(config.log, levelOverride: logLevel)
        // From here on SIGTERM/SIGINT mean "stop gracefully", even while sinkd is still starting.
        let stopSignals = StopSignals()
        // Metrics are recorded from the first record on: the backend goes in before anything starts.
        let registry = config.metrics.listen.isEmpty ? nil : MetricsService.bootstrap()
        let logger = Logger(label: "sinkd")
        let daemon: Daemon
        do {
            daemon = try await Daemon.start(config: config, logger: logger, registry: registry)
        } catch {
            logger.critical("sinkd could not start", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        try await daemon.run(stopSignals: stopSignals)
    }
}

extension LogLevel: ExpressibleByArgument {}

/// The running daemon: the WAL and the services around it, started in order and stopped in
/// reverse.
struct Daemon {
    let config: SinkdConfig
    let logger: Logger
    let wal: WriteAheadLog
    let ingest: IngestService
    let delivery: DeliveryService
    let control: ControlService
    let metrics: MetricsService?

    static func start(config: SinkdConfig, logger: Logger, registry: PrometheusCollectorRegistry?) async throws -> Daemon {
        let wal: WriteAheadLog
        do {
            wal = try WriteAheadLog(options: WALOptions(config), logger: logger)
        } catch {
            throw DaemonError("cannot open the write-ahead log in \(config.wal.directory): \(error)")
        }
        wal.start()
        let deadLetters: DeadLetterStore
        do {
            deadLetters = try DeadLetterStore(directory: config.delivery.deadLetterDirectory)
        } catch {
            wal.shutdown()
            throw DaemonError("cannot use the dead-letter directory \(config.delivery.deadLetterDirectory): \(error)")
        }
        let families = SinkFamilies.make(config)
        let delivery = DeliveryService(wal: wal, config: config, families: families, deadLetters: deadLetters, logger: logger)
        let state = ServerState()
        let shared = IngestContext(wal: wal, config: config, logger: logger, state: state)
        let ingest = IngestService(shared: shared, config: config.ingest, source: .path(config.ingest.socket, mode: config.ingest.socketMode), group: MultiThreadedEventLoopGroup.singleton)
        let control = ControlService(config: config, wal: wal, delivery: delivery, deadLetters: deadLetters, ingestState: state, logger: logger)
        do {
            try await control.bind()
        } catch {
            wal.shutdown()
            throw DaemonError("cannot listen on the control socket \(config.control.socket): \(error)")
        }
        var metrics: MetricsService?
        if let registry, let listen = HostPort(config.metrics.listen) {
            let service = MetricsService(listen: listen, registry: registry, wal: wal, delivery: delivery, logger: logger)
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
        return Daemon(config: config, logger: logger, wal: wal, ingest: ingest, delivery: delivery, control: control, metrics: metrics)
    }

    func run(stopSignals: StopSignals) async throws {
        let group = ServiceGroup(configuration: .init(
            // Stopped in reverse: ingest first (no new records), then delivery (in-flight batches).
            services: [.init(service: stopSignals, successTerminationBehavior: .gracefullyShutdownGroup), .init(service: delivery), .init(service: control)]
                + (metrics.map { [.init(service: $0)] } ?? []) + [.init(service: ingest)],
            logger: logger
        ))
        logger.info("sinkd started", metadata: ["version": "\(SinkdVersion.version)", "config": "\(config.sourcePath)"])
        try await group.run()
        for family in delivery.families.values { await family.shutdown() }
        // Last: seal the active segment and save delivery progress.
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            BlockingThread.detach { [wal] in
                wal.shutdown()
                done.resume()
            }
        }
        logger.info("sinkd stopped")
    }
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
    static func make(_ config: SinkdConfig) -> [ConfigFamily: any SinkFamily] {
        var families: [ConfigFamily: any SinkFamily] = [:]
        if let file = config.sinks.file { families[.file] = FileSinkFamily(config: file) }
        if let redis = config.sinks.redis { families[.redis] = RedisSinkFamily(config: redis) }
        if let http = config.sinks.http { families[.http] = HTTPSinkFamily(config: http) }
        return families
    }
}

/// SIGTERM and SIGINT, caught from the start of `sinkd run` (before any socket is bound), so that a
/// stop requested while sinkd is still starting is honoured gracefully once it runs: this service
/// returns on the first signal, and the group then shuts down gracefully.
final class StopSignals: Service, @unchecked Sendable {
    private let stream: AsyncStream<Int32>
    private let sources: [DispatchSourceSignal]

    init() {
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
        for await _ in stream.cancelOnGracefulShutdown() { return }
    }
}
