/// How sinkd shares its file-descriptor limit (RLIMIT_NOFILE) so that it never runs out: a fixed
/// reserve for its own files and sockets (WAL, progress, locks, control and metrics sockets,
/// event loops, the journal, dead letters, the families' shared connection pools), one descriptor
/// per ingest connection and `perSink` per live sink: its WAL reader's segment, plus what a sink
/// of the costliest configured family holds of its own (a `file` sink its outbox file, a `redis`
/// sink its `pool_size` connections; other families share one pool per family).
/// When the configured `ingest.max_connections` and `delivery.max_sinks` do not fit, both are
/// lowered (connections to at most half of what is left); sinks beyond the lowered number wait
/// their turn as with `max_sinks`, clients beyond it are answered `too_many_connections`.
/// I/O-free: the caller reads the limit (docs/SERVICE.md, Resource bounds).
public struct DescriptorBudget: Sendable, Equatable {
    /// Descriptors kept for sinkd itself (an idle sinkd holds about 25).
    public static let baseReserve = 64
    /// Below this limit sinkd does not start.
    public static let minimumLimit = 256

    public var limit: Int
    public var reserve: Int
    public var connections: Int
    public var sinks: Int
    public var perSink: Int

    public init(limit: Int, maxConnections: Int, maxSinks: Int, sharedConnections: Int = 0, perSink: Int = 2) {
        self.limit = limit
        self.perSink = max(1, perSink)
        reserve = Self.baseReserve + max(0, sharedConnections)
        let available = max(0, limit - reserve)
        if maxConnections + self.perSink * maxSinks <= available {
            connections = maxConnections
            sinks = maxSinks
        } else {
            connections = max(1, min(maxConnections, available / 2))
            sinks = max(1, min(maxSinks, (available - connections) / self.perSink))
        }
    }

    /// The budget for `config` under `limit`.
    public init(limit: Int, config: SinkdConfig) {
        var shared = 0
        var perSink = 1
        let sinks = config.sinks
        for family in sinks.configuredFamilies {
            guard let options = sinks.options(for: family) else { continue }
            switch family {
            case .file: perSink = max(perSink, 2)
            case .redis: perSink = max(perSink, 1 + options.poolSize)
            case .http: shared += options.poolSize * max(1, sinks.http?.endpoints.count ?? 1)
            // One connection per broker that leads a partition: at least the bootstrap servers.
            case .kafka: shared += max(options.poolSize, sinks.kafka?.bootstrapServers.count ?? 1)
            // Shared pools: a family's pool_size connections (channels share amqp's connections,
            // conductor's pool is shared by every conductor sink).
            case .sqs, .amqp, .nats, .conductor: shared += options.poolSize
            }
        }
        self.init(
            limit: limit, maxConnections: config.ingest.maxConnections, maxSinks: config.delivery.maxSinks,
            sharedConnections: shared, perSink: perSink)
    }

    /// True when the configuration's numbers had to be lowered.
    public func lowers(maxConnections: Int, maxSinks: Int) -> Bool {
        connections < maxConnections || sinks < maxSinks
    }
}
