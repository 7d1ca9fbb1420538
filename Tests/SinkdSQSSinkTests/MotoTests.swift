import Foundation
import Logging
import ServiceLifecycle
import Testing
import SinkdCore
import SinkdIngest
import SinkdTestSupport
import SinkdWAL
@testable import SinkdDelivery
@testable import SinkdSQSSink

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

/// moto's server mode on 127.0.0.1, one per test: SinkdTestServers' launcher.
typealias MotoServer = MotoProcess

struct ReceivedMessage {
    var body: String
    var attributes: [String: String]
    var system: [String: String]
}

extension SQSSinkFamily {
    static func forMoto(_ moto: MotoServer, _ configure: (inout SQSSinkConfig) -> Void = { _ in }) -> SQSSinkFamily {
        var config = SQSSinkConfig()
        config.endpoint = moto.endpoint
        config.accessKeyID = "test"
        config.secretAccessKey = "test"
        config.region = "us-east-1"
        configure(&config)
        return SQSSinkFamily(config: config, environment: [:])
    }

    /// Receives (and deletes) messages until `count` arrived or `timeout` passed.
    func receiveAll(queue: String, count: Int, timeout: TimeInterval = 20) async throws -> [ReceivedMessage] {
        let deadline = Date().addingTimeInterval(timeout)
        let testSigner = try await signer()
        var url: String?
        while url == nil, Date() < deadline {  // sinkd may not have created it yet
            let lookup = try? await call(
                .getQueueUrl, body: SQSProtocol.getQueueUrl(name: queue, ownerAccountID: ""), signer: testSigner)
            url = lookup.flatMap { SQSProtocol.parseQueueURL($0.body) }
            if url == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        guard let url else { return [] }
        var out: [ReceivedMessage] = []
        while out.count < count, Date() < deadline {
            let request = SQSProtocol.json([
                "QueueUrl": url, "MaxNumberOfMessages": 10, "MessageAttributeNames": ["All"], "AttributeNames": ["All"],
                "MessageSystemAttributeNames": ["All"], "VisibilityTimeout": 600,
            ])
            let response = try await call(
                .receiveMessage, body: request, signer: testSigner, maxResponseBytes: 16 << 20)
            let object = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
            let messages = object?["Messages"] as? [[String: Any]] ?? []
            if messages.isEmpty {
                try await Task.sleep(for: .milliseconds(50))
                continue
            }
            var handles: [[String: String]] = []
            for (i, m) in messages.enumerated() {
                let attributes = (m["MessageAttributes"] as? [String: [String: Any]] ?? [:]).compactMapValues {
                    $0["StringValue"] as? String
                }
                out.append(
                    ReceivedMessage(
                        body: m["Body"] as? String ?? "", attributes: attributes,
                        system: m["Attributes"] as? [String: String] ?? [:]))
                handles.append(["Id": "\(i)", "ReceiptHandle": m["ReceiptHandle"] as? String ?? ""])
            }
            _ = try await call(
                .deleteMessageBatch, body: SQSProtocol.json(["QueueUrl": url, "Entries": handles]), signer: testSigner)
        }
        return out
    }
}

@Suite(.serialized, .blockingThreads) struct MotoTests {
    static func records(
        _ prefix: String, _ n: Int, sink: String, configure: (Int, inout EventRecord) -> Void = { _, _ in }
    ) -> [SequencedRecord] {
        (0..<n).map { i in
            var r = EventRecord(id: "\(prefix)-\(i)", sink: sink, payload: Array(#"{"n":\#(i)}"#.utf8))
            configure(i, &r)
            return SequencedRecord(seq: UInt64(i + 1), record: r)
        }
    }

    static func client(_ family: SQSSinkFamily, _ sink: String) throws -> any SinkClient {
        try family.makeClient(for: try SinkAddress.parse(identity: sink), options: ConfigFamily.sqs.defaultOptions)
    }

    @Test func standardQueueGetsBodiesAndAttributes() async throws {
        let moto = try MotoServer()
        let family = SQSSinkFamily.forMoto(moto) { $0.createMissingQueues = true }
        let client = try Self.client(family, "sqs:orders")
        let batch = Self.records("o", 10, sink: "sqs:orders") { i, r in
            r.workflowInstanceId = "wf-\(i)"
            r.workflowType = "checkout"
        }
        #expect(try await client.send(batch) == Array(repeating: .delivered, count: 10))
        let received = try await family.receiveAll(queue: "orders", count: 10)
        #expect(Set(received.map(\.body)) == Set((0..<10).map { #"{"n":\#($0)}"# }))
        let first = try #require(received.first { $0.body == #"{"n":3}"# })
        #expect(
            first.attributes == ["sinkd-message-id": "o-3", "workflowInstanceId": "wf-3", "workflowType": "checkout"])
        await family.shutdown()
    }

    @Test func fifoQueueGroupsByWorkflowAndDeduplicatesRetries() async throws {
        let moto = try MotoServer()
        let family = SQSSinkFamily.forMoto(moto) { $0.createMissingQueues = true }
        let client = try Self.client(family, "sqs:audit.fifo")
        let batch = Self.records("f", 6, sink: "sqs:audit.fifo") { i, r in
            r.workflowInstanceId = i % 2 == 0 ? "wf-even" : "wf-odd"
        }
        #expect(try await client.send(batch) == Array(repeating: .delivered, count: 6))
        // A retry of the same records (same ids): SQS drops them as duplicates.
        #expect(try await client.send(batch) == Array(repeating: .delivered, count: 6))
        // Both sends were answered, so the queue holds what it will ever hold: the six, then nothing.
        let received = try await family.receiveAll(queue: "audit.fifo", count: 6)
        #expect(received.count == 6)
        let more = try await family.receiveAll(queue: "audit.fifo", count: 1, timeout: 2)
        #expect(more.isEmpty, "the resent batch was deduplicated by MessageDeduplicationId")
        for m in received {
            let n = Int(m.body.dropFirst(5).dropLast())!
            #expect(m.system["MessageGroupId"] == (n % 2 == 0 ? "wf-even" : "wf-odd"))
            #expect(m.system["MessageDeduplicationId"] == "f-\(n)")
        }
        let evens = received.filter { $0.system["MessageGroupId"] == "wf-even" }.map(\.body)
        #expect(evens == [#"{"n":0}"#, #"{"n":2}"#, #"{"n":4}"#], "in order within a group")
        await family.shutdown()
    }

    /// Issue 20, item 5: by default a missing queue is created, as Conductor does; with
    /// `create_missing_queues: false` its records are dead-lettered.
    @Test func missingQueueIsCreatedByDefaultAndPermanentWhenSwitchedOff() async throws {
        let moto = try MotoServer()
        #expect(SQSSinkConfig().createMissingQueues, "Conductor's behaviour is the default")
        let byDefault = SQSSinkFamily.forMoto(moto)
        #expect(
            try await Self.client(byDefault, "sqs:fresh").send(Self.records("f", 2, sink: "sqs:fresh")) == [
                .delivered, .delivered,
            ])
        #expect(try await byDefault.receiveAll(queue: "fresh", count: 2).count == 2)
        await byDefault.shutdown()
        let strict = SQSSinkFamily.forMoto(moto) { $0.createMissingQueues = false }
        let outcomes = try await Self.client(strict, "sqs:nowhere").send(Self.records("m", 3, sink: "sqs:nowhere"))
        #expect(outcomes.count == 3)
        for outcome in outcomes {
            guard case .permanent(let reason) = outcome else {
                Issue.record("expected permanent, got \(outcome)"); continue
            }
            #expect(reason.contains("queue nowhere does not exist"))
            #expect(reason.contains("create_missing_queues is false"))
        }
        let creating = SQSSinkFamily.forMoto(moto) { $0.createMissingQueues = true }
        #expect(
            try await Self.client(creating, "sqs:nowhere").send(Self.records("m", 3, sink: "sqs:nowhere"))
                == Array(repeating: .delivered, count: 3))
        #expect(try await creating.receiveAll(queue: "nowhere", count: 3).count == 3)
        // A queue URL as the location is used as is.
        let url = "\(moto.endpoint)/123456789012/nowhere"
        #expect(
            try await Self.client(strict, "sqs:\(url)").send(Self.records("u", 2, sink: "sqs:\(url)")) == [
                .delivered, .delivered,
            ])
        await strict.shutdown()
        await creating.shutdown()
    }

    @Test func limitsFollowTheConfiguration() async throws {
        let moto = try MotoServer()
        let family = SQSSinkFamily.forMoto(moto) { $0.maxBatchBytes = 64 << 10 }
        var options = ConfigFamily.sqs.defaultOptions
        options.batchSize = 50
        let limits = family.limits(for: try SinkAddress.parse(identity: "sqs:q"), options: options)
        #expect(limits.maxBatchCount == 10, "SQS takes at most 10 entries")
        #expect(limits.maxBatchBytes == 64 << 10)
        #expect(limits.maxMessageBytes == 64 << 10, "max_message_bytes 0 = max_batch_bytes")
        await family.shutdown()
    }

    @Test func noServerIsAConnectionFailure() async throws {
        var config = SQSSinkConfig()
        config.endpoint = "http://127.0.0.1:\(LoopbackTCP.freePort())"
        config.accessKeyID = "test"
        config.secretAccessKey = "test"
        let family = SQSSinkFamily(config: config, environment: [:])
        await #expect(throws: SinkConnectionError.self) {
            try await Self.client(family, "sqs:x").send(Self.records("x", 1, sink: "sqs:x"))
        }
        await family.shutdown()
    }

    /// moto with authentication on (INITIAL_NO_AUTH_ACTION_COUNT=0) refuses unknown keys: the sink
    /// must pause (a connection-level error), never turn the records into dead letters.
    @Test func refusedCredentialsPauseTheSink() async throws {
        let moto = try MotoServer(environment: ["INITIAL_NO_AUTH_ACTION_COUNT": "0"])
        let family = SQSSinkFamily.forMoto(moto) { $0.createMissingQueues = true }
        let error = await #expect(throws: SinkConnectionError.self) {
            try await Self.client(family, "sqs:secure").send(Self.records("c", 2, sink: "sqs:secure"))
        }
        #expect(error?.message.contains("SQS refused the credentials") == true)
        #expect(error?.message.contains("InvalidClientTokenId") == true)
        await family.shutdown()
    }

    /// Through the delivery engine over a real WAL: one record too large for the queue goes to the
    /// dead-letter store beside the others; then the server stops mid-stream and comes back
    /// (empty: moto keeps nothing), and every record is delivered.
    @Test func engineDeadLettersOversizedAndSurvivesAServerRestart() async throws {
        let moto = try MotoServer()
        var sqs = SQSSinkConfig()
        sqs.endpoint = moto.endpoint
        sqs.accessKeyID = "test"
        sqs.secretAccessKey = "test"
        sqs.createMissingQueues = true
        sqs.maxBatchBytes = 4096
        sqs.options.retry.initialBackoff = .milliseconds(20)
        sqs.options.retry.maxBackoff = .milliseconds(200)
        let family = SQSSinkFamily(config: sqs, environment: [:])
        let engine = try RunningEngine(families: [.sqs: family]) { $0.sinks.sqs = sqs }
        let deadLetters = engine.deadLetters
        func append(_ records: [EventRecord]) async { await engine.append(records) }
        var first = (0..<60).map {
            EventRecord(id: "e-\($0)", sink: "sqs:engine", payload: Array(#"{"n":\#($0)}"#.utf8))
        }
        first[30].payload = Array(("\"" + String(repeating: "x", count: 5000) + "\"").utf8)
        await append(first)
        let before = try await family.receiveAll(queue: "engine", count: 59)
        #expect(before.count == 59)
        let dead = try deadLetters.entries(sink: "sqs:engine")
        #expect(dead.map(\.record.id) == ["e-30"])
        #expect(dead.first?.error.contains("this sink takes at most 4096") == true)

        moto.stop()
        await append(
            (60..<120).map { EventRecord(id: "e-\($0)", sink: "sqs:engine", payload: Array(#"{"n":\#($0)}"#.utf8)) })
        // The pipeline meets the dead server and pauses the sink before the server comes back.
        #expect(await engine.wait(for: "sqs:engine", state: .down), "the sink paused while the server was gone")
        try moto.restart()
        let after = try await family.receiveAll(queue: "engine", count: 60, timeout: 60)
        #expect(
            Set(after.map(\.body)) == Set((60..<120).map { #"{"n":\#($0)}"# }),
            "every record sent while the server was down arrived")
        await engine.stop()
        await family.shutdown()
    }
}
