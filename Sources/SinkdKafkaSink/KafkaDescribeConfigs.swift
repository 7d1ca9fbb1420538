/// DescribeConfigs (api key 32) v1-v2, for one topic's `max.message.bytes`: the largest record
/// batch the broker takes for it, so that batches are cut to fit before they are sent. Fields from
/// Kafka's DescribeConfigsRequest/Response.json (v0 is gone from Kafka 4; v3 adds fields sinkd
/// does not need). I/O-free.
public enum KafkaDescribeConfigs {
    public static let apiKey: Int16 = 32
    public static let versions: ClosedRange<Int16> = 1...2
    static let topicResource: Int8 = 2

    public static func request(
        version: Int16, correlationID: Int32, clientID: String, topic: String, keys: [String]
    ) -> [UInt8] {
        var body = KafkaWriter()
        KafkaRequestHeader.v1(&body, apiKey: apiKey, version: version, correlationID: correlationID, clientID: clientID)
        body.int32(1)
        body.int8(topicResource)
        body.string(topic)
        body.int32(Int32(keys.count))
        for k in keys { body.string(k) }
        body.bool(false)  // IncludeSynonyms
        return KafkaRequestHeader.framed(body.bytes)
    }

    public struct Result: Sendable, Equatable {
        public var errorCode: Int16
        public var errorMessage: String?
        public var name: String
        public var configs: [String: String?]
    }

    public static func response(_ payload: [UInt8]) throws(KafkaReader.Truncated) -> [Result] {
        var r = KafkaReader(payload)
        _ = try r.int32("correlation id")
        _ = try r.int32("throttle time")
        let count = try r.arrayCount("results", minimumElementBytes: 13)
        var results: [Result] = []
        for _ in 0..<count {
            let error = try r.int16("error code")
            let message = try r.nullableString("error message")
            _ = try r.int8("resource type")
            let name = try r.string("resource name")
            let configCount = try r.arrayCount("configs", minimumElementBytes: 10)
            var configs: [String: String?] = [:]
            for _ in 0..<configCount {
                let key = try r.string("config name")
                let value = try r.nullableString("config value")
                _ = try r.bool("read only")
                _ = try r.int8("config source")
                _ = try r.bool("is sensitive")
                let synonyms = try r.arrayCount("synonyms", minimumElementBytes: 5)
                for _ in 0..<synonyms {
                    _ = try r.string("synonym name")
                    _ = try r.nullableString("synonym value")
                    _ = try r.int8("synonym source")
                }
                configs[key] = value
            }
            results.append(Result(errorCode: error, errorMessage: message, name: name, configs: configs))
        }
        return results
    }
}
