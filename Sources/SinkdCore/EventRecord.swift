/// One EVENT task message as sinkd stores and forwards it.
///
/// `payload` holds the JSON text of the request's `payload` exactly as the client sent it: it is
/// forwarded byte for byte, never re-serialized.
public struct EventRecord: Sendable, Equatable {
    /// Conductor's taskId: the message id.
    public var id: String
    /// The normalized sink identity (`prefix:location` after Conductor's expansion).
    public var sink: String
    public var payload: [UInt8]
    public var workflowInstanceId: String?
    public var workflowType: String?
    public var workflowVersion: Int64?
    public var correlationId: String?
    public var taskRefName: String?
    /// 0 to 99.
    public var priority: UInt8?
    /// Milliseconds since the Unix epoch when sinkd accepted the record.
    public var acceptedAtMillis: UInt64
    /// Set by the request parser when the client sent the expanded form (`queueType` and
    /// `queueURI`, as an event queue provider sees it): `sink` is then `queueType:queueURI` and is
    /// not expanded again. Not stored: after resolution `sink` is the identity either way.
    public var sinkIsExpanded = false

    public init(
        id: String, sink: String, payload: [UInt8],
        workflowInstanceId: String? = nil, workflowType: String? = nil, workflowVersion: Int64? = nil,
        correlationId: String? = nil, taskRefName: String? = nil, priority: UInt8? = nil,
        acceptedAtMillis: UInt64 = 0
    ) {
        self.id = id
        self.sink = sink
        self.payload = payload
        self.workflowInstanceId = workflowInstanceId
        self.workflowType = workflowType
        self.workflowVersion = workflowVersion
        self.correlationId = correlationId
        self.taskRefName = taskRefName
        self.priority = priority
        self.acceptedAtMillis = acceptedAtMillis
    }
}

/// A record together with the sequence number the WAL gave it.
public struct SequencedRecord: Sendable, Equatable {
    public var seq: UInt64
    public var record: EventRecord

    public init(seq: UInt64, record: EventRecord) {
        self.seq = seq
        self.record = record
    }
}
