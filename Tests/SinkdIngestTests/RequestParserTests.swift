import Foundation
import Testing
@testable import SinkdIngest
import SinkdCore

/// The request grammar as a table: each line and exactly what it must produce.
@Suite struct RequestParserTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var line: [UInt8]
        var expected: Result<EventRecord, IngestRejection>
        var testDescription: String { String(decoding: line.prefix(60), as: UTF8.self) }

        init(_ line: String, _ expected: Result<EventRecord, IngestRejection>) {
            self.line = Array(line.utf8)
            self.expected = expected
        }

        init(bytes: [UInt8], _ expected: Result<EventRecord, IngestRejection>) {
            self.line = bytes
            self.expected = expected
        }
    }

    static func request(
        _ id: String, _ sink: String, _ payload: String, configure: (inout EventRecord) -> Void = { _ in }
    ) -> Result<EventRecord, IngestRejection> {
        var r = EventRecord(id: id, sink: sink, payload: Array(payload.utf8))
        configure(&r)
        return .success(r)
    }

    static func reject(_ code: RejectCode, _ message: String, id: String? = nil) -> Result<EventRecord, IngestRejection>
    {
        .failure(IngestRejection(code, message, id: id))
    }

    static let cases: [Case] = [
        Case(#"{"id":"t-1","sink":"sqs:orders","payload":{"a":1}}"#, request("t-1", "sqs:orders", #"{"a":1}"#)),
        // The payload is kept byte for byte: spacing, key order, number spelling, escapes.
        Case(
            #"{"payload" : { "b" : 1.50e+3 , "a" : "\u00e9\n" } ,"id":"t","sink":"s:x"}"#,
            request("t", "s:x", #"{ "b" : 1.50e+3 , "a" : "\u00e9\n" }"#)),
        Case(#"{"id":"t","sink":"s:x","payload":null}"#, request("t", "s:x", "null")),
        Case(#"{"id":"t","sink":"s:x","payload":[1,"two",[],{}]}"#, request("t", "s:x", #"[1,"two",[],{}]"#)),
        Case(#"{"id":"t","sink":"s:x","payload":"é"}"#, request("t", "s:x", #""é""#)),
        Case(#"  {"id":"t","sink":"s:x","payload":0}  "#, request("t", "s:x", "0")),
        Case(#"{"id":"t\"1","sink":"s:x","payload":-0.5}"#, request("t\"1", "s:x", "-0.5")),
        Case(#"{"id":"\ud83d\ude00","sink":"s:x","payload":1}"#, request("😀", "s:x", "1")),
        Case(
            #"{"id":"t","sink":"conductor","payload":{},"workflowInstanceId":"w1","workflowType":"wf","workflowVersion":3,"correlationId":"c","taskRefName":"r","priority":99,"extra":{"x":[true,false,null]}}"#,
            request("t", "conductor", "{}") { r in
                r.workflowInstanceId = "w1"; r.workflowType = "wf"; r.workflowVersion = 3
                r.correlationId = "c"; r.taskRefName = "r"; r.priority = 99
            }),
        Case(#"{"id":"t","sink":"s:x","payload":1,"priority":null,"correlationId":null}"#, request("t", "s:x", "1")),
        // Not JSON, or not an object.
        Case("", reject(.malformed, "malformed JSON at byte 0: expected a JSON object, got an empty line")),
        Case("not json", reject(.malformed, "malformed JSON at byte 0: expected 'null'")),
        Case("[1,2]", reject(.malformed, "a request must be a JSON object, got an array")),
        Case(#""text""#, reject(.malformed, "a request must be a JSON object, got a string")),
        Case("42", reject(.malformed, "a request must be a JSON object, got a number")),
        Case(
            #"{"id":"t","sink":"s:x","payload":1"#,
            reject(.malformed, "malformed JSON at byte 34: expected ',' or '}' after an object member", id: "t")),
        Case(
            #"{"id":"t","sink":"s:x","payload":1} {}"#,
            reject(.malformed, "malformed JSON at byte 36: expected the end of the line after the JSON object", id: "t")
        ),
        Case(
            #"{"id":"t","sink":"s:x","payload":01}"#,
            reject(.malformed, "malformed JSON at byte 34: expected ',' or '}' after an object member", id: "t")),
        Case(
            #"{"id":"t","sink":"s:x","payload":tru}"#,
            reject(.malformed, "malformed JSON at byte 33: expected 'true'", id: "t")),
        Case(
            #"{"id":"t","sink":"s:x","payload":"a\qb"}"#,
            reject(
                .malformed, #"malformed JSON at byte 36: expected a valid escape (\" \\ \/ \b \f \n \r \t \uXXXX)"#,
                id: "t")),
        Case(
            "{\"id\":\"t\",\"sink\":\"s:x\",\"payload\":\"a\tb\"}",
            reject(
                .malformed, "malformed JSON at byte 35: expected no raw control character inside a string (escape it)",
                id: "t")),
        Case(
            #"{"id":"t","sink":"s:x","payload":[1,]}"#,
            reject(
                .malformed,
                "malformed JSON at byte 36: expected a value (object, array, string, number, true, false or null)",
                id: "t")),
        Case(#"{'id':'t'}"#, reject(.malformed, "malformed JSON at byte 1: expected '\"' to start an object key")),
        Case(
            #"{"id":"t","sink":"s:x","payload":"#,
            reject(.malformed, "malformed JSON at byte 33: expected a value", id: "t")),
        Case(
            String(repeating: "[", count: 300),
            reject(.malformed, "malformed JSON at byte 256: expected nesting at most 256 levels deep")),
        // Invalid UTF-8 anywhere in a string.
        Case(
            bytes: Array(#"{"id":"t","sink":"s:x","payload":""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8),
            reject(.malformed, "invalid UTF-8 at byte 34", id: "t")),
        Case(
            bytes: Array(#"{"id":"t","sink":"s:x","payload":""#.utf8) + [0xED, 0xA0, 0x80] + Array(#""}"#.utf8),
            reject(.malformed, "invalid UTF-8 at byte 34", id: "t")),
        Case(
            bytes: Array(#"{"id":""#.utf8) + [0xFF] + Array(#"","sink":"s:x","payload":1}"#.utf8),
            reject(.malformed, "invalid UTF-8 at byte 7")),
        // Missing and invalid fields.
        Case(
            #"{"sink":"s:x","payload":1}"#,
            reject(.missingField, "missing field 'id': the message id (Conductor's taskId)")),
        Case(
            #"{"id":"t","payload":1}"#,
            reject(.missingField, #"missing field 'sink': where to forward the record, e.g. "sqs:orders""#, id: "t")),
        Case(
            #"{"id":"t","sink":"s:x"}"#,
            reject(.missingField, "missing field 'payload': the message body to forward (any JSON value)", id: "t")),
        Case(#"{"id":"","sink":"s:x","payload":1}"#, reject(.invalidField, "field 'id' must not be empty", id: "")),
        Case(#"{"id":7,"sink":"s:x","payload":1}"#, reject(.invalidField, "field 'id' must be a string, got a number")),
        Case(#"{"id":null,"sink":"s:x","payload":1}"#, reject(.invalidField, "field 'id' must be a string, got null")),
        Case(#"{"id":"t","sink":"","payload":1}"#, reject(.invalidField, "field 'sink' must not be empty", id: "t")),
        Case(
            #"{"id":"t","sink":["s"],"payload":1}"#,
            reject(.invalidField, "field 'sink' must be a string, got an array", id: "t")),
        Case(
            #"{"id":"\#(String(repeating: "x", count: 256))","sink":"s:x","payload":1}"#,
            reject(
                .invalidField, "field 'id' is 256 bytes long; at most 255 are allowed",
                id: String(repeating: "x", count: 256))),
        Case(
            #"{"id":"t","sink":"s:x","payload":1,"priority":100}"#,
            reject(.invalidField, "field 'priority' must be from 0 to 99, got 100", id: "t")),
        Case(
            #"{"id":"t","sink":"s:x","payload":1,"priority":-1}"#,
            reject(.invalidField, "field 'priority' must be from 0 to 99, got -1", id: "t")),
        Case(
            #"{"id":"t","sink":"s:x","payload":1,"priority":1.5}"#,
            reject(.invalidField, "field 'priority' must be an integer, got 1.5", id: "t")),
        Case(
            #"{"id":"t","sink":"s:x","payload":1,"priority":"5"}"#,
            reject(.invalidField, "field 'priority' must be an integer, got a string", id: "t")),
        Case(
            #"{"id":"t","sink":"s:x","payload":1,"workflowVersion":99999999999999999999}"#,
            reject(.invalidField, "field 'workflowVersion' must be an integer, got 99999999999999999999", id: "t")),
        Case(
            #"{"id":"t","sink":"s:x","payload":1,"workflowType":{}}"#,
            reject(.invalidField, "field 'workflowType' must be a string, got an object", id: "t")),
        Case(
            #"{"id":"t","id":"u","sink":"s:x","payload":1}"#,
            reject(.invalidField, "field 'id' appears more than once (at byte 10)", id: "t")),
        Case(
            #"{"id":"t","sink":"s:x","payload":1,"taskRefName":"\ud800"}"#,
            reject(.invalidField, "field 'taskRefName' contains an unpaired UTF-16 surrogate escape", id: "t")),
    ]

    @Test(arguments: cases)
    func parses(_ c: Case) {
        #expect(RequestParser.parse(c.line) == c.expected)
    }

    /// Strings are scanned eight bytes at a time: a byte that needs attention must be found at
    /// every position of the word, and at every distance from the end of the line.
    @Test func stringScanFindsSpecialBytesAtEveryPosition() {
        let prefix = #"{"id":"t","sink":"s:x","payload":""#
        for length in 0..<20 {
            for position in 0..<max(length, 1) where position < length {
                var body = Array(repeating: UInt8(ascii: "a"), count: length)
                body[position] = 0x09  // a raw tab
                let line = Array(prefix.utf8) + body + Array("\"}".utf8)
                #expect(
                    RequestParser.parse(line)
                        == Self.reject(
                            .malformed,
                            "malformed JSON at byte \(prefix.utf8.count + position): expected no raw control character inside a string (escape it)",
                            id: "t"),
                    "tab at \(position) of \(length)")
                body[position] = 0xFF  // never valid UTF-8
                #expect(
                    RequestParser.parse(Array(prefix.utf8) + body + Array("\"}".utf8)).failureCode == .malformed,
                    "0xFF at \(position) of \(length)")
                body[position] = UInt8(ascii: "\\")
                body.insert(UInt8(ascii: "\""), at: position + 1)  // an escaped quote does not end it
                let payload = "\"" + String(decoding: body, as: UTF8.self) + "\""
                #expect(
                    RequestParser.parse(Array(prefix.utf8) + body + Array("\"}".utf8))
                        == Self.request("t", "s:x", payload))
            }
            // Plain text of every length, and an unterminated string of every length.
            let plain = String(repeating: "b", count: length)
            #expect(
                RequestParser.parse(Array((prefix + plain + "\"}").utf8))
                    == Self.request("t", "s:x", "\"" + plain + "\""))
            #expect(RequestParser.parse(Array((prefix + plain).utf8)).failureCode == .malformed)
        }
    }

    @Test func sinkResolution() {
        var sinks = SinksConfig()
        sinks.file = FileSinkConfig()
        let ok = EventRecord(id: "t", sink: "file:events", payload: [0x31]).resolvingSink(
            sinks: sinks, configPath: "c.yaml")
        #expect((try? ok.get())?.sink == "file:events")
        #expect(
            EventRecord(id: "t", sink: "sqss:x", payload: []).resolvingSink(sinks: sinks, configPath: "c.yaml")
                .failureCode == .invalidSink)
        #expect(
            EventRecord(id: "t", sink: "sqs:x", payload: []).resolvingSink(sinks: sinks, configPath: "c.yaml")
                .failureCode == .unknownSink)
        #expect(
            EventRecord(id: "t", sink: "kafka:x", payload: []).resolvingSink(sinks: sinks, configPath: "c.yaml")
                .failureCode == .unknownSink)
        var conductor = EventRecord(id: "t", sink: "conductor", payload: [])
        #expect(
            conductor.resolvingSink(sinks: sinks, configPath: "c.yaml").failureCode == .invalidSink,
            "needs workflowType and taskRefName")
        conductor.workflowType = "wf"
        conductor.taskRefName = "r"
        sinks.conductor = ConductorSinkConfig()
        #expect((try? conductor.resolvingSink(sinks: sinks, configPath: "c.yaml").get())?.sink == "conductor:wf:r")
    }

    @Test func responsesEncodeAsOneJSONLine() {
        #expect(
            String(decoding: IngestResponse.accepted(id: "t-1", seq: 42).encoded(), as: UTF8.self)
                == "{\"id\":\"t-1\",\"status\":\"accepted\",\"seq\":42}\n")
        #expect(
            String(decoding: IngestResponse.duplicate(id: "t-1", seq: 42).encoded(), as: UTF8.self)
                == "{\"id\":\"t-1\",\"status\":\"duplicate\",\"seq\":42}\n")
        #expect(
            String(
                decoding: IngestResponse.rejected(IngestRejection(.invalidSink, "bad \"x\"\n", id: "t-2")).encoded(),
                as: UTF8.self)
                == #"{"id":"t-2","status":"rejected","code":"invalid_sink","retryable":false,"error":"bad \"x\"\n"}"#
                + "\n")
        #expect(
            String(decoding: IngestResponse.rejected(IngestRejection(.walFull, "full")).encoded(), as: UTF8.self)
                == #"{"id":null,"status":"rejected","code":"wal_full","retryable":true,"error":"full"}"# + "\n")
    }
}

extension Result where Failure == IngestRejection {
    var failureCode: RejectCode? {
        if case .failure(let r) = self { return r.code }
        return nil
    }
}

/// FieldValues keeps one slot per field inline: a field added to `Field` needs a slot more.
@Suite struct FieldValuesTests {
    @Test func everyFieldHasASlotOfItsOwn() {
        #expect(Field.allCases.count == FieldValues.capacity)
        var values = FieldValues()
        for (n, field) in Field.allCases.enumerated() {
            values[field] = JSONScanner.Value(kind: .number, range: n..<(n + 1), string: nil)
        }
        #expect(Field.allCases.map { values[$0]?.range.lowerBound } == Array(0..<Field.allCases.count))
    }
}

@Suite struct RequestLineTests {
    /// `requestLine(for:)` is what `parse` reads back as the same record (sinkd send and dlq
    /// replay's check build their lines with it).
    @Test func parseReadsBackEveryField() throws {
        var r = EventRecord(
            id: "id \"q\" \\ é", sink: "amqp_exchange:b?routingKey=x", payload: Array(#"{"a":[1,{"b":null}]}"#.utf8))
        r.workflowInstanceId = "wi"
        r.workflowType = "wf \"✓\" /"
        r.workflowVersion = -3
        r.correlationId = "c"
        r.taskRefName = "t"
        r.priority = 7
        let parsed = try RequestParser.parse(RequestParser.requestLine(for: r)).get()
        #expect(parsed == r)
        // A control character is encoded (escaped) but not accepted back: what dlq replay's
        // check relies on to refuse a hand-edited dead letter.
        r.workflowType = "wf\n"
        #expect(RequestParser.parse(RequestParser.requestLine(for: r)).failureCode == .invalidField)
    }
}

/// Issue 18, item 1: a record whose id, sink or context field holds a control character could
/// never be delivered (HTTP headers, NATS headers, AMQP properties, SQS attributes, PostgreSQL
/// text refuse it); it is rejected at ingest, naming the field, the character and its place.
@Suite struct ControlCharacterFieldTests {
    @Test func everyControlCharacterInEveryWireFieldIsRejected() {
        let fields = ["id", "sink", "workflowInstanceId", "workflowType", "correlationId", "taskRefName"]
        let controls: [UInt32] = Array(0..<0x20) + [0x7F, 0x80, 0x85, 0x9F]
        for field in fields {
            for c in controls {
                var object: [String: String] = ["id": "ok", "sink": "file:x"]
                object[field] = (object[field] ?? "v") + "a" + String(format: "\\u%04x", c) + "b"
                let body = object.map { "\"\($0.key)\":\"\($0.value)\"" }.joined(separator: ",")
                let line = Array("{\(body),\"payload\":{}}".utf8)
                guard case .failure(let r) = RequestParser.parse(line) else {
                    Issue.record("\(field) with U+\(String(c, radix: 16)) was accepted")
                    continue
                }
                #expect(
                    r.code == .invalidField && r.message.contains("field '\(field)' contains the control character"),
                    "\(field) U+\(String(c, radix: 16)): \(r.message)")
            }
        }
    }

    @Test func ordinaryTextIsAccepted() {
        let line = Array(
            #"{"id":"tâche-1 ✓","sink":"file:x","workflowType":"Flüsse 流","correlationId":"a\"b\\c","payload":{"s":"\u0001 in the payload is fine"}}"#
                .utf8)
        guard case .success(let r) = RequestParser.parse(line) else { Issue.record("rejected"); return }
        #expect(r.id == "tâche-1 ✓" && r.correlationId == "a\"b\\c")
    }
}

/// `{"query":"queueTypes"}`: a question, not a record (docs/PROTOCOL.md, "Queries").
@Suite struct QueryTests {
    @Test func aQueryLineIsAQuery() {
        #expect(RequestParser.parseLine(Array(#"{"query":"queueTypes"}"#.utf8)) == .success(.query(.queueTypes)))
        #expect(
            RequestParser.parseLine(Array(#" { "query" : "queueTypes" , "extra" : [1] } "#.utf8))
                == .success(.query(.queueTypes)), "unknown fields are ignored, as in records")
        // A record line is still a record.
        guard
            case .success(.record(let r)) = RequestParser.parseLine(
                Array(#"{"id":"a","sink":"file:x","payload":1}"#.utf8))
        else {
            Issue.record("a record line must parse as a record")
            return
        }
        #expect(r.id == "a")
    }

    @Test(arguments: [
        (#"{"query":"sinks"}"#, "unknown query 'sinks' (known: queueTypes)"),
        (#"{"query":1}"#, "field 'query' must be a string"),
        (#"{"query":null}"#, "field 'query' must be a string"),
        (#"{"query":"queueTypes","id":"a"}"#, "a query takes no record fields, but 'id' is given"),
        (#"{"query":"queueTypes","sink":"file:x","payload":1}"#, "but 'sink' is given"),
        (#"{"query":"queueTypes","query":"queueTypes"}"#, "appears more than once"),
    ])
    func aBadQueryIsRefusedSayingWhy(_ line: String, _ says: String) {
        guard case .failure(let r) = RequestParser.parseLine(Array(line.utf8)) else {
            Issue.record("\(line) must be refused")
            return
        }
        #expect(r.code == .invalidField, "\(line)")
        #expect(r.message.contains(says), "\(line): \(r.message)")
    }

    @Test func recordOnlyCallersRefuseAQuery() {
        #expect(RequestParser.parse(Array(#"{"query":"queueTypes"}"#.utf8)).failureCode == .invalidField)
    }

    @Test func theAnswerNamesConductorsQueueTypesOfTheConfiguredFamilies() {
        var sinks = SinksConfig()
        sinks.file = FileSinkConfig()
        #expect(
            SinkPrefix.conductorQueueTypes(servedBy: sinks) == [], "file is sinkd's own, not a Conductor queue type")
        sinks.amqp = AMQPSinkConfig()
        sinks.nats = NATSSinkConfig()
        #expect(
            SinkPrefix.conductorQueueTypes(servedBy: sinks) == [
                "amqp_exchange", "amqp_queue", "jsm", "nats", "nats_stream",
            ])
        #expect(
            String(decoding: IngestResponse.queueTypes(["conductor", "sqs"]).encoded(), as: UTF8.self)
                == #"{"id":null,"status":"answer","query":"queueTypes","queueTypes":["conductor","sqs"]}"# + "\n")
        #expect(
            String(decoding: IngestResponse.queueTypes([]).encoded(), as: UTF8.self)
                == #"{"id":null,"status":"answer","query":"queueTypes","queueTypes":[]}"# + "\n")
    }
}
