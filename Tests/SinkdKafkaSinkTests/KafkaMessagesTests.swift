import Foundation
import Testing
import SinkdTestSupport
@testable import SinkdKafkaSink
import SinkdTestServers

/// Metadata and Produce against kafka-python's encoder (generated from Kafka's own message
/// definitions): sinkd's requests byte for byte, and kafka-python's responses parsed; every
/// truncation of a response is an error, never a trap.
@Suite(.blockingThreads) struct KafkaMessagesTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
        "Fixtures/kafka_messages.py"
    ).path

    /// kafka_messages.py's hex output as bytes.
    static func python(_ arguments: [String]) throws -> [UInt8] {
        let out = try Python.run([script] + arguments).trimmingCharacters(in: .whitespacesAndNewlines)
        var bytes: [UInt8] = []
        var index = out.startIndex
        while index < out.endIndex {
            let next = out.index(index, offsetBy: 2)
            bytes.append(UInt8(out[index..<next], radix: 16)!)
            index = next
        }
        return bytes
    }

    @Test(arguments: [Int16(4), 5, 7, 8])
    func metadataRequestIsKafkas(version: Int16) throws {
        let ours = KafkaMetadata.request(
            version: version, correlationID: 11, clientID: "sinkd", topics: ["orders", "audit"],
            allowAutoTopicCreation: false)
        #expect(
            ours == (try Self.python(["metadata-request", "\(version)", "11", "sinkd", "false", "orders", "audit"])))
    }

    @Test(arguments: [Int16(4), 5, 7, 8])
    func metadataResponseIsRead(version: Int16) throws {
        let payload = try Self.python(["metadata-response", "\(version)", "9"])
        let response = try KafkaMetadata.response(payload, version: version)
        #expect(response.correlationID == 9)
        #expect(response.controllerID == 2)
        #expect(
            response.brokers == [
                1: .init(nodeID: 1, host: "127.0.0.1", port: 9092),
                2: .init(nodeID: 2, host: "kafka-2.internal", port: 9093),
            ])
        #expect(
            response.topics["orders"]?.partitions == [
                .init(errorCode: 0, index: 0, leaderID: 1), .init(errorCode: 9, index: 1, leaderID: 2),
                .init(errorCode: 0, index: 2, leaderID: 1),
            ])
        #expect(response.topics["missing"]?.errorCode == 3)
        for cut in 0..<payload.count {
            #expect(throws: KafkaReader.Truncated.self) {
                try KafkaMetadata.response(Array(payload.prefix(cut)), version: version)
            }
        }
    }

    @Test(arguments: [Int16(3), 5, 7, 8])
    func produceRequestIsKafkas(version: Int16) throws {
        let a = KafkaRecordBatch.encode(
            [KafkaRecord(key: Array("k".utf8), value: Array("v".utf8), timestampMillis: 1)],
            producer: .init(id: 7, epoch: 0, baseSequence: 0))
        let b: [UInt8] = [0xAB, 0xCD]
        let ours = KafkaProduce.request(
            version: version, correlationID: 3, clientID: "sinkd", timeoutMillis: 30000, topic: "orders",
            batches: [(0, a), (2, b)])
        let hex = { (bytes: [UInt8]) in bytes.map { String(format: "%02x", $0) }.joined() }
        #expect(
            ours
                == (try Self.python([
                    "produce-request", "\(version)", "3", "sinkd", "30000", "orders", "0=" + hex(a), "2=" + hex(b),
                ])))
    }

    @Test(arguments: [Int16(3), 5, 7, 8])
    func produceResponseIsRead(version: Int16) throws {
        let payload = try Self.python(["produce-response", "\(version)", "9"])
        let response = try KafkaProduce.response(payload, version: version)
        #expect(response.correlationID == 9)
        #expect(response.throttleMillis == 5)
        let results = try #require(response.results["orders"])
        #expect(results.map(\.partition) == [0, 1, 2])
        #expect(results.map(\.errorCode) == [0, 46, 10])
        #expect(results[0].baseOffset == 41)
        if version >= 8 {
            #expect(results[2].recordErrors == [1])
            #expect(results[2].errorMessage == "a record is too large")
        }
        for cut in 0..<payload.count {
            #expect(throws: KafkaReader.Truncated.self) {
                try KafkaProduce.response(Array(payload.prefix(cut)), version: version)
            }
        }
    }

    @Test(arguments: [Int16(1), 2])
    func describeConfigsIsKafkas(version: Int16) throws {
        #expect(
            KafkaDescribeConfigs.request(
                version: version, correlationID: 5, clientID: "sinkd", topic: "orders", keys: ["max.message.bytes"])
                == (try Self.python([
                    "describe-configs-request", "\(version)", "5", "sinkd", "orders", "max.message.bytes",
                ])))
        let payload = try Self.python(["describe-configs-response", "\(version)", "5"])
        let results = try KafkaDescribeConfigs.response(payload)
        #expect(results.map(\.name) == ["orders", "missing"])
        #expect(results[0].configs["max.message.bytes"] == "524288")
        #expect(results[0].configs["cleanup.policy"] == "delete")
        #expect(results[1].errorCode == 3 && results[1].errorMessage == "no such topic")
        for cut in 0..<payload.count {
            #expect(throws: KafkaReader.Truncated.self) {
                try KafkaDescribeConfigs.response(Array(payload.prefix(cut)))
            }
        }
    }

    /// A hostile count (2^31 - 1 partitions in a few bytes) is refused before anything is allocated.
    @Test func absurdCountsAreRefused() {
        var w = KafkaWriter()
        w.int32(1)  // correlation
        w.int32(0)  // throttle
        w.int32(Int32.max)  // brokers
        #expect(throws: KafkaReader.Truncated.self) { try KafkaMetadata.response(w.bytes, version: 4) }
    }

    @Test func errorCodesDecideOutcomes() {
        #expect(KafkaErrorCode.kind(0) == .none)
        #expect(KafkaErrorCode.kind(46) == .duplicate)
        #expect(KafkaErrorCode.kind(6) == .retriable(refreshMetadata: true))
        #expect(KafkaErrorCode.kind(3) == .retriable(refreshMetadata: true))
        #expect(KafkaErrorCode.kind(19) == .retriable(refreshMetadata: false))
        #expect(KafkaErrorCode.kind(45) == .resetProducer)
        #expect(KafkaErrorCode.kind(59) == .resetProducer)
        #expect(KafkaErrorCode.kind(10) == .permanent)
        #expect(KafkaErrorCode.kind(29) == .refused)
        #expect(KafkaErrorCode.name(6) == "NOT_LEADER_OR_FOLLOWER")
        #expect(KafkaErrorCode.name(12345) == "error 12345")
    }
}
