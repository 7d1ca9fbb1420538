/// sinkd's configuration, schema v1. Every default here is the one documented in
/// Config/sinkd.yaml and docs/CONFIGURATION.md; `ConfigLoader` fills these values from YAML.
public struct SinkdConfig: Sendable, Equatable {
    /// The file this configuration was read from ("" for the built-in defaults).
    public var sourcePath: String = ""
    public var ingest = IngestConfig()
    public var control = ControlConfig()
    public var wal = WALConfig()
    public var delivery = DeliveryConfig()
    public var log = LogConfig()
    public var metrics = MetricsConfig()
    public var sinks = SinksConfig()
    /// What `${env:}`, `${file:}` and `${credential:}` references resolved to: never shown
    /// (Redaction hides them wherever they appear).
    public var secretValues: [String] = []

    public init() {}
}

public struct IngestConfig: Sendable, Equatable {
    public var socket = "/run/sinkd/ingest.sock"
    public var socketMode: UInt32 = 0o660
    public var maxRecordBytes = 1 << 20
    public var maxConnections = 1024
    /// Answers one connection may owe (its client not reading them) before sinkd stops taking
    /// its lines.
    public var maxUnansweredBytes = 256 << 10
    /// Zero means never.
    public var idleTimeout: Duration = .zero
    public var allowedUIDs: [UInt32] = []
    public var allowedGIDs: [UInt32] = []
    public init() {}
}

public struct ControlConfig: Sendable, Equatable {
    public var socket = "/run/sinkd/control.sock"
    public init() {}
}

public enum FsyncMode: String, Sendable, Equatable, CaseIterable {
    case always, interval, never
}

public enum WhenFull: String, Sendable, Equatable, CaseIterable {
    case block, reject
}

public struct WALConfig: Sendable, Equatable {
    public var directory = "/var/lib/sinkd/wal"
    public var segmentSize = 64 << 20
    public var maxSize = 10 << 30
    public var fsync: FsyncMode = .always
    public var fsyncInterval: Duration = .milliseconds(100)
    public var whenFull: WhenFull = .block
    public init() {}
}

/// Exponential backoff with full jitter. Zero `maxAttempts` / `maxAge` mean unlimited.
public struct RetryPolicy: Sendable, Equatable {
    public var initialBackoff: Duration = .milliseconds(200)
    public var maxBackoff: Duration = .seconds(60)
    public var multiplier: Double = 2.0
    public var maxAttempts = 0
    public var maxAge: Duration = .zero
    public init() {}
}

public struct DeliveryConfig: Sendable, Equatable {
    public var dedupeWindow: Duration = .seconds(600)
    public var dedupeMaxEntries = 1_000_000
    public var shutdownTimeout: Duration = .seconds(10)
    public var maxSinks = 1024
    /// Bytes of records (payloads) one pipeline holds in memory, waiting or in flight.
    public var maxHeldBytesPerSink = 32 << 20
    /// The same over all pipelines together.
    public var maxHeldBytes = 256 << 20
    public var retry = RetryPolicy()
    public var deadLetterDirectory = "/var/lib/sinkd/dead-letter"
    public init() {}
}

public enum LogLevel: String, Sendable, Equatable, CaseIterable {
    case trace, debug, info, notice, warning, error, critical
}

public enum LogFormat: String, Sendable, Equatable, CaseIterable {
    case auto, journal, logfmt, json
}

public struct LogConfig: Sendable, Equatable {
    public var level: LogLevel = .info
    public var format: LogFormat = .auto
    public init() {}
}

public struct MetricsConfig: Sendable, Equatable {
    /// "host:port"; empty means the exporter is off.
    public var listen = ""
    public init() {}
}

public enum OrderingMode: String, Sendable, Equatable, CaseIterable {
    case relaxed, strict
}

/// The options every sink family takes, besides its own.
public struct PipelineOptions: Sendable, Equatable {
    public var poolSize: Int
    public var maxInFlight: Int
    public var batchSize: Int
    public var idleTimeout: Duration = .seconds(300)
    public var ordering: OrderingMode = .relaxed
    /// How long a batch that is not full waits for more records while other batches of the sink
    /// are in flight (`linger`). With none in flight it leaves at once: an idle sink adds no delay.
    public var linger: Duration = .zero
    /// The delivery-wide policy unless the family overrides it.
    public var retry: RetryPolicy

    public init(
        poolSize: Int, maxInFlight: Int, batchSize: Int, linger: Duration = .zero, retry: RetryPolicy = RetryPolicy()
    ) {
        self.poolSize = poolSize
        self.maxInFlight = maxInFlight
        self.batchSize = batchSize
        self.linger = linger
        self.retry = retry
    }

    /// The most `linger` may be: a batch waits for company, not for minutes.
    public static let maxLinger: Duration = .seconds(10)
}

/// The configuration sections of the sink families. `nil` means the family is not configured.
public struct SinksConfig: Sendable, Equatable {
    public var file: FileSinkConfig?
    public var http: HTTPSinkConfig?
    public var redis: RedisSinkConfig?
    public var sqs: SQSSinkConfig?
    public var amqp: AMQPSinkConfig?
    public var nats: NATSSinkConfig?
    public var conductor: ConductorSinkConfig?
    public var kafka: KafkaSinkConfig?
    public init() {}

    /// The families whose section is present (an exhaustive switch: a new family is a compile
    /// error here until its section is named; docs/ADDING_A_SINK_FAMILY.md).
    public var configuredFamilies: Set<ConfigFamily> {
        Set(
            ConfigFamily.allCases.filter { family in
                switch family {
                case .file: file != nil
                case .http: http != nil
                case .redis: redis != nil
                case .sqs: sqs != nil
                case .amqp: amqp != nil
                case .nats: nats != nil
                case .conductor: conductor != nil
                case .kafka: kafka != nil
                }
            })
    }

    /// Whether `family`'s section is the same in both (a reload keeps its running family then).
    public func sameSection(_ family: ConfigFamily, as other: SinksConfig) -> Bool {
        switch family {
        case .file: file == other.file
        case .http: http == other.http
        case .redis: redis == other.redis
        case .sqs: sqs == other.sqs
        case .amqp: amqp == other.amqp
        case .nats: nats == other.nats
        case .conductor: conductor == other.conductor
        case .kafka: kafka == other.kafka
        }
    }

    public func options(for family: ConfigFamily) -> PipelineOptions? {
        switch family {
        case .file: file?.options
        case .http: http?.options
        case .redis: redis?.options
        case .sqs: sqs?.options
        case .amqp: amqp?.options
        case .nats: nats?.options
        case .conductor: conductor?.options
        case .kafka: kafka?.options
        }
    }
}

/// A section under `sinks:`. One section can serve several sink prefixes (amqp serves
/// amqp_queue and amqp_exchange; nats serves nats, nats_stream and jsm).
public enum ConfigFamily: String, Sendable, Hashable, CaseIterable, Comparable {
    case file, http, redis, sqs, amqp, nats, conductor, kafka

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    /// Defaults of the shared pipeline options, chosen per family by what its broker does well.
    public var defaultOptions: PipelineOptions {
        switch self {
        case .file: PipelineOptions(poolSize: 1, maxInFlight: 1, batchSize: 512)
        case .http: PipelineOptions(poolSize: 4, maxInFlight: 16, batchSize: 1)
        case .redis: PipelineOptions(poolSize: 1, maxInFlight: 4, batchSize: 256)
        case .sqs: PipelineOptions(poolSize: 4, maxInFlight: 8, batchSize: 10)
        case .amqp: PipelineOptions(poolSize: 2, maxInFlight: 1000, batchSize: 100)
        case .nats: PipelineOptions(poolSize: 1, maxInFlight: 256, batchSize: 100)
        case .conductor: PipelineOptions(poolSize: 2, maxInFlight: 2, batchSize: 100)
        case .kafka: PipelineOptions(poolSize: 1, maxInFlight: 4, batchSize: 4000, linger: .milliseconds(5))
        }
    }
}

public struct FileSinkConfig: Sendable, Equatable {
    public var directory = "/var/lib/sinkd/outbox"
    public var options = ConfigFamily.file.defaultOptions
    public init() {}
}

public struct HTTPEndpoint: Sendable, Equatable {
    public var url: String
    public var headers: [String: String] = [:]
    public var timeout: Duration = .seconds(10)
    public init(url: String) { self.url = url }
}

public struct HTTPSinkConfig: Sendable, Equatable {
    public var endpoints: [String: HTTPEndpoint] = [:]
    public var options = ConfigFamily.http.defaultOptions
    public init() {}
}

public struct RedisSinkConfig: Sendable, Equatable {
    public var url = "redis://127.0.0.1:6379/0"
    /// Zero means no MAXLEN on XADD.
    public var maxlen = 0
    /// How long a batch's replies may take, all of them, from the write (past it the connection
    /// is closed and the batch tried again).
    public var replyTimeout: Duration = .seconds(10)
    public var options = ConfigFamily.redis.defaultOptions
    public init() {}
}

public struct SQSSinkConfig: Sendable, Equatable {
    /// Empty means AWS_REGION, else us-east-1.
    public var region = ""
    public var endpoint = ""
    public var accountID = ""
    public var accessKeyID = ""
    public var secretAccessKey = ""
    public var sessionToken = ""
    /// The shared-file profile; empty means AWS_PROFILE, else `default`.
    public var profile = ""
    /// STS for web identity and assumed roles; empty means AWS_ENDPOINT_URL_STS, else
    /// https://sts.REGION.amazonaws.com/.
    public var stsEndpoint = ""
    public var maxBatchBytes = 256 << 10
    /// Zero means "same as max_batch_bytes".
    public var maxMessageBytes = 0
    /// Conductor creates a queue it does not find; so does sinkd unless this is false (issue 20).
    public var createMissingQueues = true
    public var fifoGroupID = "{{workflowInstanceId}}"
    public var messageAttributes = true
    public var options = ConfigFamily.sqs.defaultOptions
    public init() {}
}

public enum AMQPQueueType: String, Sendable, Equatable, CaseIterable {
    case classic, quorum
}

public struct AMQPSinkConfig: Sendable, Equatable {
    public var urls = ["amqp://guest:guest@127.0.0.1:5672/%2f"]
    public var heartbeat: Duration = .seconds(30)
    /// How long a batch's publisher confirms may take: past it the batch has failed (sent again
    /// on a new channel) and the channel is closed.
    public var confirmTimeout: Duration = .seconds(30)
    public var queueType: AMQPQueueType = .classic
    public var contentType = "application/json"
    public var contentEncoding = "UTF-8"
    public var declare = true
    public var connections = 1
    public var tls = TLSConfig()
    public var options = ConfigFamily.amqp.defaultOptions
    public init() {}
}

/// `sinks.kafka` (issue 21).
public struct KafkaSinkConfig: Sendable, Equatable {
    /// `host:port` of brokers to learn the cluster from, tried in order.
    public var bootstrapServers: [String] = []
    public var clientID = "sinkd"
    /// Record headers `sinkd-message-id` and the context fields; false = exactly Conductor's records.
    public var headers = false
    /// Ask the broker to create a missing topic (Metadata's allow_auto_topic_creation).
    public var createTopics = false
    public var requestTimeout: Duration = .seconds(30)
    /// How long a batch is sent again with its producer id and sequences (the Java client's
    /// delivery.timeout.ms): request timeouts and reconnects within it cannot store it twice.
    public var deliveryTimeout: Duration = .seconds(120)
    /// Topic metadata is asked again once this old (the Java client's metadata.max.age.ms).
    public var metadataMaxAge: Duration = .seconds(300)
    /// The record batches' codec (the broker stores them as sent; consumers decompress).
    public enum Compression: String, Sendable, Equatable, CaseIterable {
        case none
        case gzip
    }

    public var compression = Compression.none
    /// SASL authentication after ApiVersions on every connection; nil = none.
    public var sasl: KafkaSASLConfig?
    /// TLS on every connection (librdkafka's security.protocol SSL, or SASL_SSL with `sasl`); nil = plaintext.
    public var tls: TLSConfig?
    public var options = ConfigFamily.kafka.defaultOptions
    public init() {}

    /// `host:port` (IPv6 as `[::1]:9092`).
    public static func hostPort(_ text: String) -> (String, Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65_535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }
}

/// `sinks.kafka.sasl`.
public struct KafkaSASLConfig: Sendable, Equatable {
    public enum Mechanism: String, Sendable, Equatable, CaseIterable {
        case plain = "PLAIN"
        case scramSHA256 = "SCRAM-SHA-256"
        case scramSHA512 = "SCRAM-SHA-512"
    }

    public var mechanism: Mechanism = .scramSHA512
    public var username = ""
    public var password = ""
    public init(mechanism: Mechanism = .scramSHA512, username: String = "", password: String = "") {
        self.mechanism = mechanism
        self.username = username
        self.password = password
    }
}

public struct TLSConfig: Sendable, Equatable {
    public var caFile = ""
    public var certificateFile = ""
    public var keyFile = ""
    public var verify = true

    public init(caFile: String = "", certificateFile: String = "", keyFile: String = "", verify: Bool = true) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.verify = verify
    }
}

public struct NATSSinkConfig: Sendable, Equatable {
    public var servers = ["nats://127.0.0.1:4222"]
    public var user = ""
    public var password = ""
    public var token = ""
    public var nkeySeed = ""
    public var credentialsFile = ""
    public var tls = TLSConfig()
    /// Conductor's default `<appId>_jsm_notify_<stack>_` (appId conductor, stack test): without
    /// configuration sinkd publishes where Conductor's own consumers look.
    public static let conductorJSMSubjectPrefix = "conductor_jsm_notify_test_"
    public var jsmSubjectPrefix = NATSSinkConfig.conductorJSMSubjectPrefix
    public var jsmCreateStream = false
    public var options = ConfigFamily.nats.defaultOptions
    public init() {}
}

public enum PostgresSSLMode: String, Sendable, Equatable, CaseIterable {
    /// No TLS.
    case disable
    /// TLS when the server offers it, without verifying its certificate (libpq's prefer).
    case prefer
    /// TLS always, without verifying the certificate (libpq's require).
    case require
    /// TLS always, the certificate verified against `ca_file` (or the system roots) and the host name.
    case verifyFull = "verify-full"
}

public struct ConductorSinkConfig: Sendable, Equatable {
    /// `postgres://user[:password]@host[:port]/database[?sslmode=...]`; the explicit keys below
    /// override its parts.
    public var postgresURL = "postgres://conductor@127.0.0.1:5432/conductor"
    public var host: String?
    public var port: Int?
    public var database: String?
    public var user: String?
    public var password: String?
    public var sslMode: PostgresSSLMode?
    public var caFile = ""
    /// The session time zone (`SET TimeZone`) of every connection: "" = the local zone of the
    /// sinkd process (TZ, else /etc/localtime), which beside the engine is the JVM's; Conductor's
    /// `deliver_on` is a timestamp without zone compared with current_timestamp in that zone.
    public var timeZone = ""
    public var options = ConfigFamily.conductor.defaultOptions
    public init() {}
}
