import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import SinkdCore
import SinkdDelivery
import SinkdWAL

/// The Prometheus endpoint at `metrics.listen`: `GET /metrics` in the text exposition format.
/// Counters and histograms are recorded where things happen (swift-metrics); gauges of state
/// (backlog, WAL size, sink up) are refreshed from the daemon at each scrape.
public final class MetricsService: Service, Sendable {
    public let registry: PrometheusCollectorRegistry
    let listen: HostPort
    let wal: WriteAheadLog
    let delivery: DeliveryService
    let logger: Logger
    private let channel = NIOLockedValueBox<Channel?>(nil)
    private let knownSinks = NIOLockedValueBox<Set<String>>([])

    /// Installs the Prometheus backend for swift-metrics. Call once, before anything records.
    public static func bootstrap() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
            .seconds(15), .seconds(60), .seconds(300),
        ]
        factory.durationHistogramBuckets["sinkd_wal_fsync_seconds"] = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
            .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
            .milliseconds(50), .milliseconds(100), .milliseconds(500), .seconds(1),
        ]
        MetricsSystem.bootstrap(HelpingMetricsFactory(inner: factory))
        return registry
    }

    public init(
        listen: HostPort, registry: PrometheusCollectorRegistry, wal: WriteAheadLog, delivery: DeliveryService,
        logger: Logger
    ) {
        self.listen = listen
        self.registry = registry
        self.wal = wal
        self.delivery = delivery
        self.logger = logger
    }

    public func bind() async throws {
        let bound = try await ServerBootstrap(group: ControlThreads.loop)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                channel.pipeline.configureHTTPServerPipeline().flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(service: self))
                }
            }
            .bind(host: listen.host, port: listen.port).get()
        channel.withLockedValue { $0 = bound }
        logger.info("metrics endpoint listening", metadata: ["url": "http://\(listen.host):\(listen.port)/metrics"])
    }

    public func run() async throws {
        if channel.withLockedValue({ $0 }) == nil { try await bind() }
        try? await gracefulShutdown()
        try? await channel.withLockedValue({ $0 })?.close()
    }

    private func gauge(_ name: String, _ labels: [(String, String)] = []) -> Prometheus.Gauge {
        // The full name is given as metricName; no unit suffix is appended.
        registry.makeGauge(
            descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: MetricCatalogue.help(for: name)),
            labels: labels)
    }

    static let sinkGauges = [
        "sinkd_backlog_records", "sinkd_backlog_bytes", "sinkd_backlog_oldest_seconds", "sinkd_sink_up",
    ]
    static let started = Date().timeIntervalSince1970

    /// The exposition text, with state gauges refreshed.
    public func scrape() -> [UInt8] {
        let stats = wal.currentStats
        gauge("process_start_time_seconds").set(Self.started)
        gauge("sinkd_wal_bytes").set(Int64(stats.bytes))
        gauge("sinkd_wal_max_bytes").set(Int64(wal.options.maxSize))
        gauge("sinkd_wal_segments").set(Int64(stats.segments))
        gauge("sinkd_wal_corrupt_frames_at_start").set(Int64(stats.corruptFramesAtStart))
        gauge("sinkd_wal_next_seq").set(Int64(stats.nextSeq))
        gauge("sinkd_wal_disk_full").set(Int64(stats.diskFullSinceMillis > 0 ? 1 : 0))
        gauge("sinkd_wal_pending_bytes").set(Int64(stats.pendingBytes))
        let backlog = wal.backlog()
        let snapshots = Dictionary(uniqueKeysWithValues: delivery.snapshots.map { ($0.sink, $0) })
        let now = Date().timeIntervalSince1970 * 1000
        let sinks = Set(backlog.keys).union(snapshots.keys)
        let stale = knownSinks.withLockedValue { known -> Set<String> in
            defer { known = sinks }
            return known.subtracting(sinks)
        }
        // A sink neither backlogged nor live any more: its series leave the exposition.
        for sink in stale {
            let labels = [("sink", sink)]
            for name in Self.sinkGauges { registry.unregisterGauge(gauge(name, labels)) }
        }
        for sink in sinks {
            let labels = [("sink", sink)]
            let b = backlog[sink]
            gauge("sinkd_backlog_records", labels).set(Int64(b?.records ?? 0))
            gauge("sinkd_backlog_bytes", labels).set(Int64(b?.bytes ?? 0))
            let age = b?.oldestMillis.map { max(0, (now - Double($0)) / 1000) } ?? 0
            gauge("sinkd_backlog_oldest_seconds", labels).set(age)
            let up: Int64 = snapshots[sink].map { $0.state == .down ? 0 : 1 } ?? 1
            gauge("sinkd_sink_up", labels).set(up)
        }
        return registry.emitToBuffer()
    }
}

final class MetricsHTTPHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let service: MetricsService

    init(service: MetricsService) {
        self.service = service
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return }
        let found = head.method == .GET && (head.uri == "/metrics" || head.uri.hasPrefix("/metrics?"))
        let body = found ? service.scrape() : Array("not found: GET /metrics\n".utf8)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: found ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain")
        headers.add(name: "Content-Length", value: String(body.count))
        context.write(
            wrapOutboundOut(
                .head(HTTPResponseHead(version: head.version, status: found ? .ok : .notFound, headers: headers))),
            promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        let keepAlive = head.isKeepAlive
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }
}
