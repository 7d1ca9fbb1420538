/// Metadata (api key 3, v4-v8) and Produce (api key 0, v3-v8): the non-flexible versions every
/// broker since Kafka 1.0 speaks and Kafka 4 still does (it dropped Metadata v0-v3 and Produce
/// v0-v2). Fields from Kafka's MetadataRequest/Response.json and ProduceRequest/Response.json.
/// Request header v1 (api key, version, correlation id, client id), response header v0
/// (correlation id). I/O-free; a response can say anything, and parsing one never traps.

extension KafkaRequestHeader {
    /// Request header v1 (the non-flexible versions).
    public static func v1(_ w: inout KafkaWriter, apiKey: Int16, version: Int16, correlationID: Int32, clientID: String)
    {
        w.int16(apiKey)
        w.int16(version)
        w.int32(correlationID)
        w.string(clientID)
    }
}

extension KafkaWriter {
    /// int16 length then UTF-8 (at most Int16.max bytes).
    public mutating func string(_ s: String) {
        let bytes = Array(s.utf8.prefix(Int(Int16.max)))
        int16(Int16(bytes.count))
        raw(bytes)
    }

    public mutating func bool(_ v: Bool) { int8(v ? 1 : 0) }
}

extension KafkaReader {
    public mutating func string(_ what: String) throws(Truncated) -> String {
        guard let s = try nullableString(what) else {
            throw Truncated(what: what + " (null where a string is required)", offset: offset)
        }
        return s
    }

    public mutating func bool(_ what: String) throws(Truncated) -> Bool { try int8(what) != 0 }

    /// An array's int32 count: -1 (null) is 0 here; a count that cannot fit in what is left (each
    /// element takes at least `minimumElementBytes`) is refused before anything is allocated.
    public mutating func arrayCount(_ what: String, minimumElementBytes: Int) throws(Truncated) -> Int {
        let n = Int(try int32(what))
        if n == -1 { return 0 }
        guard n >= 0, n <= remaining / Swift.max(1, minimumElementBytes) else {
            throw Truncated(what: "\(what) (count \(n))", offset: offset)
        }
        return n
    }

    public mutating func int32Array(_ what: String) throws(Truncated) -> [Int32] {
        let n = try arrayCount(what, minimumElementBytes: 4)
        var out: [Int32] = []
        out.reserveCapacity(n)
        for _ in 0..<n { out.append(try int32(what)) }
        return out
    }
}

public enum KafkaMetadata {
    public static let apiKey: Int16 = 3
    public static let versions: ClosedRange<Int16> = 4...8

    public static func request(
        version: Int16, correlationID: Int32, clientID: String, topics: [String], allowAutoTopicCreation: Bool
    ) -> [UInt8] {
        var w = KafkaWriter()
        KafkaRequestHeader.v1(&w, apiKey: apiKey, version: version, correlationID: correlationID, clientID: clientID)
        w.int32(Int32(topics.count))
        for t in topics { w.string(t) }
        w.bool(allowAutoTopicCreation)
        if version >= 8 {
            w.bool(false)  // IncludeClusterAuthorizedOperations
            w.bool(false)  // IncludeTopicAuthorizedOperations
        }
        return KafkaRequestHeader.framed(w.bytes)
    }

    public struct Broker: Sendable, Equatable {
        public var nodeID: Int32
        public var host: String
        public var port: Int32
    }

    public struct Partition: Sendable, Equatable {
        public var errorCode: Int16
        public var index: Int32
        public var leaderID: Int32
    }

    public struct Topic: Sendable, Equatable {
        public var errorCode: Int16
        public var name: String
        /// By partition index.
        public var partitions: [Partition]
    }

    public struct Response: Sendable, Equatable {
        public var correlationID: Int32
        public var brokers: [Int32: Broker]
        public var controllerID: Int32
        public var topics: [String: Topic]
    }

    public static func response(_ payload: [UInt8], version: Int16) throws(KafkaReader.Truncated) -> Response {
        var r = KafkaReader(payload)
        let correlation = try r.int32("correlation id")
        _ = try r.int32("throttle time")
        var brokers: [Int32: Broker] = [:]
        for _ in 0..<(try r.arrayCount("brokers", minimumElementBytes: 12)) {
            let id = try r.int32("broker node id")
            let host = try r.string("broker host")
            let port = try r.int32("broker port")
            _ = try r.nullableString("broker rack")
            brokers[id] = Broker(nodeID: id, host: host, port: port)
        }
        _ = try r.nullableString("cluster id")
        let controller = try r.int32("controller id")
        var topics: [String: Topic] = [:]
        for _ in 0..<(try r.arrayCount("topics", minimumElementBytes: 9)) {
            let error = try r.int16("topic error code")
            let name = try r.string("topic name")
            _ = try r.bool("is internal")
            var partitions: [Partition] = []
            for _ in 0..<(try r.arrayCount("partitions", minimumElementBytes: 18)) {
                let partitionError = try r.int16("partition error code")
                let index = try r.int32("partition index")
                let leader = try r.int32("leader id")
                if version >= 7 { _ = try r.int32("leader epoch") }
                _ = try r.int32Array("replica nodes")
                _ = try r.int32Array("isr nodes")
                if version >= 5 { _ = try r.int32Array("offline replicas") }
                partitions.append(Partition(errorCode: partitionError, index: index, leaderID: leader))
            }
            if version >= 8 { _ = try r.int32("topic authorized operations") }
            partitions.sort { $0.index < $1.index }
            topics[name] = Topic(errorCode: error, name: name, partitions: partitions)
        }
        if version >= 8 { _ = try r.int32("cluster authorized operations") }
        return Response(correlationID: correlation, brokers: brokers, controllerID: controller, topics: topics)
    }
}

public enum KafkaProduce {
    public static let apiKey: Int16 = 0
    public static let versions: ClosedRange<Int16> = 3...8

    /// One topic's record batches, one per partition; acks -1 (all in-sync replicas).
    public static func request(
        version: Int16, correlationID: Int32, clientID: String, timeoutMillis: Int32, topic: String,
        batches: [(partition: Int32, records: [UInt8])]
    ) -> [UInt8] {
        request(
            version: version, correlationID: correlationID, clientID: clientID, timeoutMillis: timeoutMillis,
            topic: topic,
            capacity: batches.reduce(0) { $0 + $1.records.count },
            batches: batches.map { b in (b.partition, { (w: inout KafkaWriter) in w.raw(b.records) }) })
    }

    /// The same, framed, each batch written by its `encode` straight into the request's one buffer
    /// (`capacity`: about the batches' bytes, so that it is allocated once).
    public static func request(
        version: Int16, correlationID: Int32, clientID: String, timeoutMillis: Int32, topic: String, capacity: Int,
        batches: [(partition: Int32, encode: (inout KafkaWriter) -> Void)]
    ) -> [UInt8] {
        var w = KafkaWriter(capacity: capacity + 64 + clientID.utf8.count + topic.utf8.count + 12 * batches.count)
        w.int32(0)  // the frame's length, filled in below
        KafkaRequestHeader.v1(&w, apiKey: apiKey, version: version, correlationID: correlationID, clientID: clientID)
        w.int16(-1)  // TransactionalId: null
        w.int16(-1)  // Acks: all
        w.int32(timeoutMillis)
        w.int32(1)
        w.string(topic)
        w.int32(Int32(batches.count))
        for b in batches {
            w.int32(b.partition)
            let sizeAt = w.bytes.count
            w.int32(0)  // the batch's size, filled in below
            b.encode(&w)
            w.overwrite(int32: Int32(truncatingIfNeeded: w.bytes.count - sizeAt - 4), at: sizeAt)
        }
        w.overwrite(int32: Int32(truncatingIfNeeded: w.bytes.count - 4), at: 0)
        return w.bytes
    }

    /// Where a framed request holds its correlation id (after the length, api key and version):
    /// a request built ahead gets its id there when the connection writes it.
    public static let correlationIDOffset = 8

    public struct PartitionResult: Sendable, Equatable {
        public var partition: Int32
        public var errorCode: Int16
        public var baseOffset: Int64
        /// v8: the broker's explanation, and the records (by index in the batch) that caused it.
        public var errorMessage: String?
        public var recordErrors: [Int32]
    }

    public struct Response: Sendable, Equatable {
        public var correlationID: Int32
        /// topic → its partitions' results.
        public var results: [String: [PartitionResult]]
        public var throttleMillis: Int32
    }

    public static func response(_ payload: [UInt8], version: Int16) throws(KafkaReader.Truncated) -> Response {
        var r = KafkaReader(payload)
        let correlation = try r.int32("correlation id")
        var results: [String: [PartitionResult]] = [:]
        for _ in 0..<(try r.arrayCount("responses", minimumElementBytes: 6)) {
            let name = try r.string("topic name")
            var partitions: [PartitionResult] = []
            for _ in 0..<(try r.arrayCount("partition responses", minimumElementBytes: 14)) {
                let index = try r.int32("partition index")
                let error = try r.int16("error code")
                let base = try r.int64("base offset")
                _ = try r.int64("log append time")
                if version >= 5 { _ = try r.int64("log start offset") }
                var recordErrors: [Int32] = []
                var message: String?
                if version >= 8 {
                    for _ in 0..<(try r.arrayCount("record errors", minimumElementBytes: 6)) {
                        recordErrors.append(try r.int32("batch index"))
                        _ = try r.nullableString("batch index error message")
                    }
                    message = try r.nullableString("error message")
                }
                partitions.append(
                    PartitionResult(
                        partition: index, errorCode: error, baseOffset: base, errorMessage: message,
                        recordErrors: recordErrors))
            }
            results[name, default: []] += partitions
        }
        let throttle = try r.int32("throttle time")
        return Response(correlationID: correlation, results: results, throttleMillis: throttle)
    }
}

/// Kafka's error codes that decide an outcome (Kafka's `Errors` class: code, name, retriable).
public enum KafkaErrorCode {
    public enum Kind: Sendable, Equatable {
        case none
        /// Stored already (a retried batch the idempotent producer had written): delivered.
        case duplicate
        /// Try again (after a metadata refresh when `refreshMetadata`).
        case retriable(refreshMetadata: Bool)
        /// The producer id or its sequence is out of step: get a new producer id, then retry.
        case resetProducer
        /// The record can never be stored (too large, invalid): dead-letter it.
        case permanent
        /// Authorization or authentication refused: the sink pauses.
        case refused
    }

    public static let names: [Int16: String] = [
        -1: "UNKNOWN_SERVER_ERROR", 0: "NONE", 2: "CORRUPT_MESSAGE", 3: "UNKNOWN_TOPIC_OR_PARTITION",
        5: "LEADER_NOT_AVAILABLE", 6: "NOT_LEADER_OR_FOLLOWER", 7: "REQUEST_TIMED_OUT", 10: "MESSAGE_TOO_LARGE",
        13: "NETWORK_EXCEPTION", 17: "INVALID_TOPIC_EXCEPTION", 18: "RECORD_LIST_TOO_LARGE", 19: "NOT_ENOUGH_REPLICAS",
        20: "NOT_ENOUGH_REPLICAS_AFTER_APPEND", 21: "INVALID_REQUIRED_ACKS", 29: "TOPIC_AUTHORIZATION_FAILED",
        31: "CLUSTER_AUTHORIZATION_FAILED", 32: "INVALID_TIMESTAMP", 33: "UNSUPPORTED_SASL_MECHANISM",
        34: "ILLEGAL_SASL_STATE", 35: "UNSUPPORTED_VERSION", 42: "INVALID_REQUEST",
        43: "UNSUPPORTED_FOR_MESSAGE_FORMAT", 45: "OUT_OF_ORDER_SEQUENCE_NUMBER", 46: "DUPLICATE_SEQUENCE_NUMBER",
        47: "INVALID_PRODUCER_EPOCH", 56: "KAFKA_STORAGE_ERROR", 58: "SASL_AUTHENTICATION_FAILED",
        59: "UNKNOWN_PRODUCER_ID",
        74: "FENCED_LEADER_EPOCH", 75: "UNKNOWN_LEADER_EPOCH", 87: "INVALID_RECORD", 89: "THROTTLING_QUOTA_EXCEEDED",
        90: "PRODUCER_FENCED",
    ]

    public static func name(_ code: Int16) -> String { names[code] ?? "error \(code)" }

    public static func kind(_ code: Int16) -> Kind {
        switch code {
        case 0: return .none
        case 46: return .duplicate
        case 3, 5, 6, 74, 75: return .retriable(refreshMetadata: true)
        case -1, 2, 7, 13, 19, 20, 56, 89: return .retriable(refreshMetadata: false)
        case 45, 47, 59, 90: return .resetProducer
        case 10, 17, 18, 32, 87: return .permanent
        case 29, 31, 58: return .refused
        default: return .retriable(refreshMetadata: false)
        }
    }
}
