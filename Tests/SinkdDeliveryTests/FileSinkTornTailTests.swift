import Foundation
import Testing
import SinkdCore
import SinkdDelivery
import SinkdFileSink

/// A SIGKILL in the middle of a batch's write leaves a partial last line in the outbox; the
/// records of that batch are sent again after the restart. They must start on a line of their own
/// (the crash oracle read `{"id":"o-1…` glued onto the next record: "Expecting ',' delimiter").
@Suite struct FileSinkTornTailTests {
    @Test(arguments: ["", "{\"id\":\"torn", String(repeating: "x", count: 200_000)])
    func aPartialLastLineIsCutBeforeTheNextAppend(_ torn: String) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sinkd-torn-\(UUID().uuidString.prefix(8))"
        ).path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let whole = "{\"id\":\"a\"}\n{\"id\":\"b\"}\n"
        try (whole + torn).write(toFile: dir + "/orders.ndjson", atomically: false, encoding: .utf8)
        var config = FileSinkConfig()
        config.directory = dir
        let family = FileSinkFamily(config: config)
        let client = try family.makeClient(
            for: try SinkAddress.parse(identity: "file:orders"),
            options: PipelineOptions(poolSize: 1, maxInFlight: 1, batchSize: 10))
        let batch = ["c", "d"].enumerated().map {
            SequencedRecord(
                seq: UInt64($0.offset + 1),
                record: EventRecord(
                    id: $0.element, sink: "file:orders", payload: Array("{\"id\":\"\($0.element)\"}".utf8)))
        }
        #expect(try await client.send(batch) == [.delivered, .delivered])
        await client.close()
        let text = try String(contentsOfFile: dir + "/orders.ndjson", encoding: .utf8)
        #expect(text == whole + "{\"id\":\"c\"}\n{\"id\":\"d\"}\n")
        // Every line is a whole record.
        for line in text.split(separator: "\n") {
            #expect((try? JSONSerialization.jsonObject(with: Data(line.utf8))) != nil, "\(line.prefix(40))")
        }
    }

    /// A file of one partial line and no newline at all is cut to nothing.
    @Test func aFileWithNoWholeLineIsCutToNothing() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sinkd-torn-\(UUID().uuidString.prefix(8))"
        ).path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "{\"id\":\"par".write(toFile: dir + "/x.ndjson", atomically: false, encoding: .utf8)
        var config = FileSinkConfig()
        config.directory = dir
        let client = try FileSinkFamily(config: config).makeClient(
            for: try SinkAddress.parse(identity: "file:x"),
            options: PipelineOptions(poolSize: 1, maxInFlight: 1, batchSize: 10))
        _ = try await client.send([
            SequencedRecord(seq: 1, record: EventRecord(id: "e", sink: "file:x", payload: Array("{\"id\":\"e\"}".utf8)))
        ])
        await client.close()
        #expect(try String(contentsOfFile: dir + "/x.ndjson", encoding: .utf8) == "{\"id\":\"e\"}\n")
    }
}
