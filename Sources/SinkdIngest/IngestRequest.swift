import SinkdCore

/// The response codes of the ingest protocol (docs/PROTOCOL.md).
public enum RejectCode: String, Sendable, Equatable, CaseIterable {
    case malformed
    case tooLarge = "too_large"
    case missingField = "missing_field"
    case invalidField = "invalid_field"
    case invalidSink = "invalid_sink"
    case unknownSink = "unknown_sink"
    case forbidden
    case walFull = "wal_full"
    case shuttingDown = "shutting_down"
    case tooManyConnections = "too_many_connections"
    case `internal`

    /// Whether sending the same request again later can succeed.
    public var retryable: Bool {
        switch self {
        case .walFull, .shuttingDown, .tooManyConnections, .internal: true
        default: false
        }
    }
}

/// What one request line asks: a record to accept, or a question about this sinkd.
public enum IngestRequest: Sendable, Equatable {
    case record(EventRecord)
    case query(IngestQuery)
}

/// The questions a client may ask on the ingest socket (docs/PROTOCOL.md, "Queries"): read-only,
/// answered at once, never touching the WAL.
public enum IngestQuery: String, Sendable, Equatable, CaseIterable {
    /// The queue types (Conductor's `getQueueType()`, sinkd's sink prefixes) this sinkd forwards:
    /// those whose family its running configuration has. The Conductor plugin asks it to know which
    /// of Conductor's event queues to publish through sinkd.
    case queueTypes

    static let knownList = allCases.map(\.rawValue).joined(separator: ", ")
}

extension SinkPrefix {
    /// Conductor's own queue types among the prefixes (`file`, `http` and `redis` are sinkd's).
    public var isConductorQueueType: Bool {
        switch self {
        case .file, .http, .redis: false
        case .conductor, .sqs, .amqpQueue, .amqpExchange, .nats, .natsStream, .jsm, .kafka: true
        }
    }

    /// The Conductor queue types `sinks` serves, in a stable order.
    public static func conductorQueueTypes(servedBy sinks: SinksConfig) -> [String] {
        let families = sinks.configuredFamilies
        return allCases.filter { $0.isConductorQueueType && $0.configFamily.map(families.contains) == true }.map(
            \.rawValue
        ).sorted()
    }
}

/// A request line that was refused: the code, a message that says what and where, and the
/// request's id when it could be read.
public struct IngestRejection: Error, Sendable, Equatable {
    public var code: RejectCode
    public var message: String
    public var id: String?

    public init(_ code: RejectCode, _ message: String, id: String? = nil) {
        self.code = code
        self.message = message
        self.id = id
    }
}

extension EventRecord {
    /// Resolves the sink of a parsed request (its `sink` as the client sent it) against the
    /// configuration: the record to append, with the normalized sink identity, or why not.
    public func resolvingSink(sinks: SinksConfig, configPath: String) -> Result<EventRecord, IngestRejection> {
        do {
            let address = try SinkAddress.parse(
                sink, workflowType: workflowType, taskRefName: taskRefName, sinks: sinks, configPath: configPath,
                expanded: sinkIsExpanded)
            var resolved = self
            resolved.sink = address.identity
            resolved.sinkIsExpanded = false
            return .success(resolved)
        } catch {
            return .failure(
                IngestRejection(error.isConfigurationProblem ? .unknownSink : .invalidSink, error.description, id: id))
        }
    }
}
