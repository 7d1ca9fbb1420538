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

/// The fields of one request line, before its sink is resolved.
public struct IngestRequest: Sendable, Equatable {
    public var id: String
    public var sink: String
    /// The payload's JSON text, byte for byte as received.
    public var payload: [UInt8]
    public var workflowInstanceId: String?
    public var workflowType: String?
    public var workflowVersion: Int64?
    public var correlationId: String?
    public var taskRefName: String?
    public var priority: UInt8?

    public init(id: String, sink: String, payload: [UInt8]) {
        self.id = id
        self.sink = sink
        self.payload = payload
    }

    /// Resolves the sink against the configuration: the record to append, or why not.
    public func record(sinks: SinksConfig, configPath: String) -> Result<EventRecord, IngestRejection> {
        do {
            let address = try SinkAddress.parse(sink, workflowType: workflowType, taskRefName: taskRefName, sinks: sinks, configPath: configPath)
            return .success(EventRecord(
                id: id, sink: address.identity, payload: payload,
                workflowInstanceId: workflowInstanceId, workflowType: workflowType, workflowVersion: workflowVersion,
                correlationId: correlationId, taskRefName: taskRefName, priority: priority))
        } catch {
            return .failure(IngestRejection(error.isConfigurationProblem ? .unknownSink : .invalidSink, error.description, id: id))
        }
    }
}
