import Foundation
import Testing
import SinkdTestSupport
import SinkdCore
@testable import SinkdKafkaSink

@Suite(.blockingThreads) struct KafkaRecordBatchTests {
    static let decoder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
        "Fixtures/decode_batch.py"
    ).path

    static func decode(_ batch: [UInt8]) throws -> [[String: Any]] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", decoder]
        let input = Pipe(), output = Pipe(), errors = Pipe()
        p.standardInput = input
        p.standardOutput = output
        p.standardError = errors
        try p.run()
        input.fileHandleForWriting.write(Data(batch.map { String(format: "%02x", $0) }.joined().utf8))
        try input.fileHandleForWriting.close()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "kafka-python refused the batch: \(err)")
        return try String(decoding: out, as: UTF8.self).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }

    /// An independent reader (kafka-python's DefaultRecordBatch) checks the CRC and reads back
    /// every record, key, value, timestamp and header, and the idempotent producer's fields.
    @Test func aBatchIsReadBackByAnIndependentImplementation() throws {
        let records = [
            KafkaRecord(key: Array("task-1".utf8), value: Array(#"{"n":1}"#.utf8), timestampMillis: 1_700_000_000_000),
            KafkaRecord(
                key: Array("task-2".utf8), value: Array(#"{"n":2}"#.utf8),
                headers: [("sinkd-message-id", Array("task-2".utf8))],
                timestampMillis: 1_700_000_000_250),
            KafkaRecord(key: nil, value: nil, timestampMillis: 1_699_999_999_000),
        ]
        let batch = KafkaRecordBatch.encode(records, producer: .init(id: 4242, epoch: 3, baseSequence: 17))
        let lines = try Self.decode(batch)
        #expect(lines.first?["producer_id"] as? Int == 4242)
        #expect(lines.first?["producer_epoch"] as? Int == 3)
        #expect(lines.first?["base_sequence"] as? Int == 17)
        #expect(lines.first?["count"] as? Int == 3)
        let got = Array(lines.dropFirst())
        #expect(got.map { $0["key"] as? String } == ["task-1", "task-2", nil])
        #expect(got.map { $0["value"] as? String } == [#"{"n":1}"#, #"{"n":2}"#, nil])
        #expect(got.map { $0["timestamp"] as? Int } == [1_700_000_000_000, 1_700_000_000_250, 1_699_999_999_000])
        #expect((got[1]["headers"] as? [[String]]) == [["sinkd-message-id", "task-2"]])
    }

    /// compression gzip: the records section is a gzip member (codec 1 in the attributes), which
    /// kafka-python's reader decompresses to the same records; the CRC covers the compressed bytes.
    @Test func aGzipBatchIsReadBackByAnIndependentImplementation() throws {
        let records = (0..<50).map {
            KafkaRecord(
                key: Array("task-\($0)".utf8),
                value: Array(#"{"order":"o-\#($0)","status":"paid","items":[1,2,3]}"#.utf8),
                timestampMillis: 1_700_000_000_000 + Int64($0))
        }
        let plain = KafkaRecordBatch.encode(records, producer: .init(id: 7, epoch: 0, baseSequence: 0))
        let gzip = KafkaRecordBatch.encode(
            records, producer: .init(id: 7, epoch: 0, baseSequence: 0), compression: .gzip)
        #expect(gzip.count * 3 < plain.count, "repetitive JSON compresses: \(gzip.count) vs \(plain.count) bytes")
        let lines = try Self.decode(gzip)
        #expect(lines.first?["compression"] as? Int == 1)
        #expect(lines.first?["count"] as? Int == 50)
        #expect(
            lines.dropFirst().map { $0["key"] as? String } == records.map { String(decoding: $0.key!, as: UTF8.self) })
        #expect(
            lines.dropFirst().map { $0["value"] as? String }
                == records.map { String(decoding: $0.value!, as: UTF8.self) })
        #expect(try Self.decode(plain).first?["compression"] as? Int == 0)
    }

    /// Cutting a partition's records into batches that fit max.message.bytes: WAL order kept,
    /// each batch's estimate within the limit, a record larger than the limit alone in its batch
    /// (the broker then says MESSAGE_TOO_LARGE: a dead letter, never a stuck sink).
    @Test func batchesAreCutToTheLimit() {
        let records = [100, 200, 300, 5000, 50, 50, 400].map {
            KafkaRecord(key: Array(repeating: 1, count: 10), value: Array(repeating: 2, count: $0), timestampMillis: 0)
        }
        let limit = KafkaRecordBatch.overheadBytes + 700
        let cut = KafkaRecordBatch.chunks(Array(records.indices), limit: limit) { records[$0] }
        #expect(cut.flatMap { $0 } == Array(records.indices))
        #expect(cut == [[0, 1], [2], [3], [4, 5, 6]])
        for chunk in cut where chunk.count > 1 {
            let encoded = KafkaRecordBatch.encode(chunk.map { records[$0] }, producer: .none)
            #expect(
                encoded.count <= limit,
                "the estimate bounds the encoded size (Kafka compares the whole batch, log overhead included)")
        }
    }

    /// The topic client's shortcut estimate equals the estimate of the record it builds.
    @Test func theClientsEstimateIsTheRecordsEstimate() throws {
        var r = EventRecord(
            id: "t-1", sink: "kafka:x", payload: Array(#"{"a":1}"#.utf8), workflowInstanceId: "wf",
            workflowType: "checkout")
        r.correlationId = "c"
        for headers in [false, true] {
            var config = KafkaSinkConfig()
            config.headers = headers
            let client = KafkaTopicClient(family: KafkaSinkFamily(config: config), topic: "x")
            #expect(client.estimatedSize(r) == KafkaRecordBatch.estimatedSize(client.record(r, timestampMillis: 0)))
        }
    }

    @Test func varintsAreZigzagLEB128() {
        func enc(_ v: Int64) -> [UInt8] { var w = KafkaWriter(); w.varint(v); return w.bytes }
        #expect(enc(0) == [0x00])
        #expect(enc(-1) == [0x01])
        #expect(enc(1) == [0x02])
        #expect(enc(63) == [0x7E])
        #expect(enc(-64) == [0x7F])
        #expect(enc(64) == [0x80, 0x01])
        #expect(enc(300) == [0xD8, 0x04])
        #expect(enc(Int64.min).count == 10)
    }
}
