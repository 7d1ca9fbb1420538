/// InitProducerId (api key 22), v3-v4 (flexible versions; Tansu answers only v3+): the idempotent
/// producer's id and epoch, asked for once per producer and again after UNKNOWN_PRODUCER_ID.
/// Fields from Kafka's InitProducerIdRequest/Response.json. I/O-free.
public enum KafkaInitProducerId {
    public static let apiKey: Int16 = 22

    /// A whole request frame: request header v2 (flexible), then TransactionalId (compact nullable
    /// string: null), TransactionTimeoutMs, ProducerId, ProducerEpoch (-1, -1 for a new producer),
    /// and no tagged fields.
    public static func request(
        version: Int16 = 3, correlationID: Int32, clientID: String,
        producerID: Int64 = -1, producerEpoch: Int16 = -1
    ) -> [UInt8] {
        var body = KafkaWriter()
        KafkaRequestHeader.v2(&body, apiKey: apiKey, version: version, correlationID: correlationID, clientID: clientID)
        body.uvarint(0)  // TransactionalId: null
        body.int32(Int32.max)  // TransactionTimeoutMs (unused without a transactional id)
        body.int64(producerID)
        body.int16(producerEpoch)
        body.uvarint(0)  // tagged fields
        return KafkaRequestHeader.framed(body.bytes)
    }

    public struct Response: Sendable, Equatable {
        public var correlationID: Int32
        public var errorCode: Int16
        public var producerID: Int64
        public var producerEpoch: Int16
    }

    /// A response frame's payload: response header v1 (correlation id, tagged fields), then
    /// ThrottleTimeMs, ErrorCode, ProducerId, ProducerEpoch, tagged fields.
    public static func response(_ payload: [UInt8]) throws(KafkaReader.Truncated) -> Response {
        var r = KafkaReader(payload)
        let correlation = try r.int32("correlation id")
        try r.skipTaggedFields("response header tagged fields")
        _ = try r.int32("throttle time")
        let error = try r.int16("error code")
        let id = try r.int64("producer id")
        let epoch = try r.int16("producer epoch")
        try r.skipTaggedFields("tagged fields")
        return Response(correlationID: correlation, errorCode: error, producerID: id, producerEpoch: epoch)
    }
}

/// Request headers and framing.
public enum KafkaRequestHeader {
    /// Request header v2: api key, version, correlation id, client id (a nullable int16-length
    /// string even in flexible versions), tagged fields.
    public static func v2(_ w: inout KafkaWriter, apiKey: Int16, version: Int16, correlationID: Int32, clientID: String)
    {
        w.int16(apiKey)
        w.int16(version)
        w.int32(correlationID)
        let id = Array(clientID.utf8.prefix(Int(Int16.max)))
        w.int16(Int16(id.count))
        w.raw(id)
        w.uvarint(0)
    }

    /// The 4-byte size, then the request.
    public static func framed(_ body: [UInt8]) -> [UInt8] {
        var frame = KafkaWriter()
        frame.int32(Int32(truncatingIfNeeded: body.count))
        frame.raw(body)
        return frame.bytes
    }
}
