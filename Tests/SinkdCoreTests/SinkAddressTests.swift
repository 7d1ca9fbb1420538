import Testing
@testable import SinkdCore

/// The sink grammar as a table: Conductor's rules first, then sinkd's validation.
@Suite struct SinkAddressTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var sink: String
        var workflowType: String? = "orderWf"
        var taskRefName: String? = "notify"
        /// The normalized identity, or the exact error message.
        var expected: Result<String, SinkAddressError>
        var testDescription: String { sink }
    }

    static let allFamilies: SinksConfig = {
        var s = SinksConfig()
        s.file = FileSinkConfig()
        var http = HTTPSinkConfig()
        http.endpoints["audit"] = HTTPEndpoint(url: "http://127.0.0.1:1/")
        s.http = http
        s.redis = RedisSinkConfig()
        s.sqs = SQSSinkConfig()
        s.amqp = AMQPSinkConfig()
        s.nats = NATSSinkConfig()
        s.conductor = ConductorSinkConfig()
        var kafka = KafkaSinkConfig()
        kafka.bootstrapServers = ["127.0.0.1:9092"]
        s.kafka = kafka
        return s
    }()

    static let cases: [Case] = [
        // Conductor's expansion of its own queue.
        Case(sink: "conductor", expected: .success("conductor:orderWf:notify")),
        Case(sink: "conductor:shipped", expected: .success("conductor:orderWf:shipped")),
        Case(sink: "conductor:otherWf:q", expected: .success("conductor:orderWf:otherWf:q")),
        Case(sink: "conductor:conductor:q", expected: .success("conductor:orderWf:q")),
        Case(sink: "conductor:a:conductor:b", expected: .success("conductor:orderWf:a:b")),
        Case(sink: "conductorx", expected: .failure(.invalidConductorSink("conductorx"))),
        Case(sink: "conductor_queue:x", expected: .failure(.invalidConductorSink("conductor_queue:x"))),
        // As Conductor expands them: the queue `<workflowType>:` (issue 20, item 8).
        Case(sink: "conductor:", expected: .success("conductor:orderWf:")),
        Case(sink: "conductor:conductor:", expected: .success("conductor:orderWf:")),
        Case(
            sink: "conductor", workflowType: nil,
            expected: .failure(.missingContext(sink: "conductor", field: "workflowType"))),
        Case(
            sink: "conductor", taskRefName: nil,
            expected: .failure(.missingContext(sink: "conductor", field: "taskRefName"))),
        Case(
            sink: "conductor:x", workflowType: "",
            expected: .failure(.missingContext(sink: "conductor:x", field: "workflowType"))),
        // Split at the first colon; unknown and missing prefixes.
        Case(sink: "orders", expected: .failure(.noColon("orders"))),
        Case(sink: "", expected: .failure(.noColon(""))),
        Case(sink: "sqss:orders", expected: .failure(.unknownPrefix("sqss"))),
        Case(sink: "amqp:billing", expected: .failure(.unknownPrefix("amqp"))),
        Case(sink: "SQS:orders", expected: .failure(.unknownPrefix("SQS"))),
        Case(sink: ":orders", expected: .failure(.unknownPrefix(""))),
        Case(sink: "kafka:payments", expected: .success("kafka:payments")),
        Case(sink: "sqs:", expected: .failure(.emptyLocation("sqs:"))),
        // SQS.
        Case(sink: "sqs:orders", expected: .success("sqs:orders")),
        Case(sink: "sqs:orders.fifo", expected: .success("sqs:orders.fifo")),
        Case(
            sink: "sqs:https://sqs.us-east-1.amazonaws.com/123456789012/orders",
            expected: .success("sqs:https://sqs.us-east-1.amazonaws.com/123456789012/orders")),
        Case(sink: "sqs:bad name", expected: .failure(.invalidLocation(sink: "sqs:bad name", reason: sqsReason))),
        Case(
            sink: "sqs:" + String(repeating: "q", count: 81),
            expected: .failure(.invalidLocation(sink: "sqs:" + String(repeating: "q", count: 81), reason: sqsReason))),
        // AMQP, as Conductor's AMQPSettings.
        Case(sink: "amqp_queue:billing", expected: .success("amqp_queue:billing")),
        Case(
            sink: "amqp_exchange:billing?exchangeType=topic&routingKey=paid",
            expected: .success("amqp_exchange:billing?exchangeType=topic&routingKey=paid")),
        Case(
            sink: "amqp_exchange:billing?EXCHANGETYPE=fanout",
            expected: .success("amqp_exchange:billing?EXCHANGETYPE=fanout")),
        Case(
            sink: "amqp_queue:q?durable=false&autoDelete=true&exclusive=false&deliveryMode=1&maxPriority=10",
            expected: .success(
                "amqp_queue:q?durable=false&autoDelete=true&exclusive=false&deliveryMode=1&maxPriority=10")),
        Case(
            sink: "amqp_queue:q?deliveryMode=3",
            expected: .failure(
                .invalidLocation(
                    sink: "amqp_queue:q?deliveryMode=3",
                    reason: "deliveryMode must be 1 (transient) or 2 (persistent), got '3'"))),
        Case(
            sink: "amqp_queue:q?maxPriority=high",
            expected: .failure(
                .invalidLocation(
                    sink: "amqp_queue:q?maxPriority=high",
                    reason: "maxPriority must be an integer from 1 to 255, got 'high'"))),
        Case(
            sink: "amqp_exchange:?routingKey=a",
            expected: .failure(
                .invalidLocation(sink: "amqp_exchange:?routingKey=a", reason: "the exchange name before '?' is empty"))),
        // NATS family.
        Case(sink: "nats:alerts", expected: .success("nats:alerts")),
        Case(sink: "nats:alerts.high:workers", expected: .success("nats:alerts.high:workers")),
        Case(sink: "nats:alerts:", expected: .success("nats:alerts:")),
        // As Conductor: core NATS publishes a subject with an empty token (warned once); JetStream
        // cannot store one (Conductor's own jsm publish fails too); `jsm:` alone is the prefix.
        Case(sink: "nats:a..b", expected: .success("nats:a..b")),
        Case(sink: "nats:a b", expected: .failure(.invalidLocation(sink: "nats:a b", reason: natsReason))),
        Case(sink: "jsm:a..b", expected: .failure(.invalidLocation(sink: "jsm:a..b", reason: natsReason))),
        Case(sink: "jsm:", expected: .success("jsm:")),
        Case(sink: "jsm:audit", expected: .success("jsm:audit")),
        // Conductor's queue-group form, on every NATS prefix (issue 20, item 3).
        Case(sink: "jsm:audit:x", expected: .success("jsm:audit:x")),
        Case(sink: "nats_stream:legacy:workers", expected: .success("nats_stream:legacy:workers")),
        Case(sink: "nats_stream:legacy", expected: .success("nats_stream:legacy")),
        // sinkd's own families.
        Case(sink: "file:events", expected: .success("file:events")),
        Case(
            sink: "file:../etc/passwd",
            expected: .failure(.invalidLocation(sink: "file:../etc/passwd", reason: fileReason))),
        Case(sink: "file:.hidden", expected: .failure(.invalidLocation(sink: "file:.hidden", reason: fileReason))),
        Case(sink: "http:audit", expected: .success("http:audit")),
        Case(sink: "http:billing", expected: .failure(.unknownHTTPEndpoint("billing", known: ["audit"]))),
        Case(sink: "redis:stream:orders", expected: .success("redis:stream:orders")),
        Case(
            sink: "redis:has space",
            expected: .failure(
                .invalidLocation(
                    sink: "redis:has space",
                    reason: "a redis stream key must not contain white space and is at most 512 bytes"))),
    ]

    static let sqsReason =
        "an SQS queue name has 1 to 80 letters, digits, '-' or '_' (plus '.fifo' for FIFO queues), or is an https:// queue URL"
    static let natsReason =
        "a NATS subject is dot-separated non-empty tokens without white space or ':' (e.g. orders.created)"
    static let fileReason =
        "a file sink name may use letters, digits, '.', '_' and '-', must not start with '.', and is at most 200 bytes"

    @Test(arguments: cases)
    func grammar(_ c: Case) {
        let result = Result { () throws(SinkAddressError) -> String in
            try SinkAddress.parse(
                c.sink, workflowType: c.workflowType, taskRefName: c.taskRefName, sinks: Self.allFamilies,
                configPath: "sinkd.yaml"
            ).identity
        }
        #expect(result == c.expected)
    }

    /// `jsm:` alone needs a prefix to publish to.
    @Test func bareJetStreamSinkNeedsAPrefix() {
        var sinks = Self.allFamilies
        sinks.nats?.jsmSubjectPrefix = ""
        #expect(
            throws: SinkAddressError.invalidLocation(
                sink: "jsm:",
                reason:
                    "'jsm:' alone publishes to sinks.nats.jsm.subject_prefix, which is empty: name a subject (jsm:orders)"
            )
        ) {
            try SinkAddress.parse("jsm:", workflowType: nil, taskRefName: nil, sinks: sinks, configPath: "sinkd.yaml")
        }
    }

    @Test func tableIsLargeEnough() {
        #expect(Self.cases.count >= 40)
    }

    @Test func unconfiguredFamilyNamesTheFamilyAndFile() throws {
        var sinks = SinksConfig()
        sinks.file = FileSinkConfig()
        let error = #expect(throws: SinkAddressError.self) {
            try SinkAddress.parse(
                "amqp_exchange:billing", workflowType: nil, taskRefName: nil, sinks: sinks,
                configPath: "/etc/sinkd/sinkd.yaml")
        }
        #expect(
            error?.description
                == "sink family 'amqp' (which serves amqp_exchange sinks) is not configured in /etc/sinkd/sinkd.yaml")
        #expect(error?.isConfigurationProblem == true)
        let sqs = #expect(throws: SinkAddressError.self) {
            try SinkAddress.parse(
                "sqs:orders", workflowType: nil, taskRefName: nil, sinks: sinks, configPath: "/etc/sinkd/sinkd.yaml")
        }
        #expect(sqs?.description == "sink family 'sqs' is not configured in /etc/sinkd/sinkd.yaml")
    }

    @Test func messagesListKnownPrefixes() {
        #expect(
            SinkAddressError.unknownPrefix("sqss").description
                == "unknown sink prefix 'sqss' (known: conductor, sqs, amqp_queue, amqp_exchange, nats, nats_stream, jsm, kafka, file, http, redis)"
        )
        #expect(SinkAddressError.noColon("orders").description.hasPrefix("sink 'orders' has no ':'"))
        #expect(
            SinkAddressError.notSupportedYet(.kafka).description
                == "sink prefix 'kafka' is recognised but not supported yet by sinkd")
    }

    @Test func parsesAMQPSettings() throws {
        let address = try SinkAddress.parse(
            "amqp_exchange:billing?exchangeType=direct&ROUTINGKEY=paid%20now&durable=FALSE&maxPriority=5&bindQueueName=b",
            workflowType: nil, taskRefName: nil)
        guard case .amqp(let s) = address.target else {
            Issue.record("expected an AMQP target, got \(address.target)")
            return
        }
        #expect(s.kind == .exchange)
        #expect(s.name == "billing")
        #expect(s.exchangeType == "direct")
        #expect(s.routingKey == "paid%20now", "verbatim, as Conductor uses it")
        #expect(s.durable == false)
        #expect(s.autoDelete == false)
        #expect(s.exclusive == false)
        #expect(s.deliveryMode == 2)
        #expect(s.maxPriority == 5)
        #expect(s.bindQueueName == "b")
        let plain = try SinkAddress.parse("amqp_queue:orders", workflowType: nil, taskRefName: nil)
        #expect(plain.target == .amqp(AMQPSettings(kind: .queue, name: "orders")))
    }

    @Test func natsQueueGroupIsSplitOff() throws {
        let address = try SinkAddress.parse("nats:alerts:workers", workflowType: nil, taskRefName: nil)
        #expect(address.target == .natsSubject("alerts", queueGroup: "workers"))
        #expect(
            try SinkAddress.parse("conductor:q", workflowType: "wf", taskRefName: "t").target == .conductorQueue("wf:q")
        )
    }
}

/// Conductor's AMQP grammar, row by row: each input, what Conductor's `AMQPSettings.fromURI`
/// (conductor-oss, amqp/.../util/AMQPSettings.java: split at `\\s*&\\s*` and `\\s*=\\s*`, only
/// two-part pairs read, names case-insensitive, values verbatim, Boolean.parseBoolean, last one
/// wins, Integer.parseInt for deliveryMode) makes of it, and sinkd's result, which must be the
/// same (issue 20, items 6 and 8). `nil` for Conductor: it throws and the task fails; sinkd
/// refuses at ingest.
struct AMQPGrammarRow: Sendable, CustomStringConvertible {
    var location: String
    var kind: AMQPSettings.Kind = .exchange
    /// Conductor's reading: (exchangeType, routingKey, durable, deliveryMode), or nil if it throws.
    var conductor: (exchangeType: String, routingKey: String, durable: Bool, deliveryMode: UInt8)?
    /// A note sinkd logs once for the sink (where Conductor's meaning may surprise).
    var noted: Bool = false
    var description: String { location }
}

let conductorAMQPGrammar: [AMQPGrammarRow] = [
    AMQPGrammarRow(location: "x?routingKey=a+b", conductor: ("topic", "a+b", true, 2)),
    AMQPGrammarRow(location: "x?routingKey=a%2Eb", conductor: ("topic", "a%2Eb", true, 2)),
    AMQPGrammarRow(location: "x?routingKey = k & exchangeType = direct", conductor: ("direct", "k", true, 2)),
    AMQPGrammarRow(location: "x?exchangeType=", conductor: ("topic", "", true, 2), noted: true),
    AMQPGrammarRow(location: "x?routingKey", conductor: ("topic", "", true, 2), noted: true),
    AMQPGrammarRow(location: "x?flag&routingKey=k", conductor: ("topic", "k", true, 2), noted: true),
    AMQPGrammarRow(location: "x?routingKey=a=b", conductor: ("topic", "", true, 2), noted: true),
    AMQPGrammarRow(location: "x?routingKey=a&routingkey=b", conductor: ("topic", "b", true, 2), noted: true),
    AMQPGrammarRow(location: "x?ttl=5&routingKey=k", conductor: ("topic", "k", true, 2), noted: true),
    AMQPGrammarRow(location: "x? routingKey=k", conductor: ("topic", "", true, 2), noted: true),
    AMQPGrammarRow(location: "x?durable=yes", conductor: ("topic", "", false, 2), noted: true),
    AMQPGrammarRow(location: "x?durable=TRUE&deliveryMode=1", conductor: ("topic", "", true, 1)),
    AMQPGrammarRow(location: "x?EXCHANGETYPE=fanout&", conductor: ("fanout", "", true, 2)),
    AMQPGrammarRow(location: "x?deliveryMode=3", conductor: nil),
    AMQPGrammarRow(location: "x?deliveryMode=two", conductor: nil),
    AMQPGrammarRow(location: "q?maxPriority=high", kind: .queue, conductor: nil),
]

@Suite struct ConductorAMQPGrammarTests {
    @Test(arguments: conductorAMQPGrammar)
    func amqpParametersMeanWhatConductorMakesOfThem(_ row: AMQPGrammarRow) {
        let parsed = try? AMQPSettings.parse(row.location, kind: row.kind)
        guard let expected = row.conductor else {
            #expect(parsed == nil, "Conductor refuses \(row.location); so does sinkd")
            return
        }
        guard let parsed else {
            Issue.record("Conductor accepts \(row.location); sinkd refused it")
            return
        }
        #expect(parsed.exchangeType == expected.exchangeType)
        #expect(parsed.routingKey == expected.routingKey)
        #expect(parsed.durable == expected.durable)
        #expect(parsed.deliveryMode == expected.deliveryMode)
        #expect(parsed.notes.isEmpty == !row.noted, "\(parsed.notes)")
    }
}

/// Conductor's sink grammar outside AMQP, row by row: each input, what conductor-oss makes of it
/// (core `Event.java` computeQueueName: `conductor` → `conductor:<workflow>:<taskRef>`,
/// `conductor:X` → `conductor:<workflow>:` + X with every `conductor:` removed, any other
/// `conductor…` refused; `EventQueues.getQueue`: the type before the first ':', the provider for
/// it or no queue; NATS/JetStream queues: `subject[:group]` by String.split(":"), which drops a
/// trailing empty part), and sinkd's destination, which must be the same where Conductor
/// publishes (issue 20, item 8). Rows where sinkd deliberately differs say why.
struct ConductorSinkRow: Sendable, CustomStringConvertible {
    enum Conductor: Sendable {
        case publishes(SinkAddress.Target)
        /// The EVENT task fails (and where).
        case fails(String)
    }
    var sink: String
    var conductor: Conductor
    /// Why sinkd's answer differs from Conductor's (nil: the same).
    var differs: String? = nil
    var description: String { sink }
}

let conductorSinkGrammar: [ConductorSinkRow] = [
    ConductorSinkRow(sink: "conductor", conductor: .publishes(.conductorQueue("orderWf:notify"))),
    ConductorSinkRow(sink: "conductor:shipped", conductor: .publishes(.conductorQueue("orderWf:shipped"))),
    ConductorSinkRow(sink: "conductor:otherWf:q", conductor: .publishes(.conductorQueue("orderWf:otherWf:q"))),
    ConductorSinkRow(sink: "conductor:conductor:q", conductor: .publishes(.conductorQueue("orderWf:q"))),
    ConductorSinkRow(sink: "conductor:a:conductor:b", conductor: .publishes(.conductorQueue("orderWf:a:b"))),
    ConductorSinkRow(sink: "conductor:", conductor: .publishes(.conductorQueue("orderWf:"))),
    ConductorSinkRow(sink: "conductor:conductor:", conductor: .publishes(.conductorQueue("orderWf:"))),
    ConductorSinkRow(sink: "conductorx", conductor: .fails("computeQueueName: Invalid / Unsupported sink")),
    ConductorSinkRow(sink: "orders", conductor: .fails("EventQueues.getQueue: no ':' in the queue URI")),
    ConductorSinkRow(sink: "sqss:orders", conductor: .fails("EventQueues.getQueue: no provider for type sqss")),
    ConductorSinkRow(sink: "sqs:orders", conductor: .publishes(.sqsQueue("orders"))),
    ConductorSinkRow(
        sink: "sqs:orders.fifo",
        conductor: .fails("SQSObservableQueue: CreateQueue of a .fifo name without FifoQueue is refused by SQS"),
        differs: "sinkd sends to FIFO queues (MessageGroupId, MessageDeduplicationId): docs/sinks/sqs.md"),
    ConductorSinkRow(sink: "nats:alerts", conductor: .publishes(.natsSubject("alerts", queueGroup: nil))),
    ConductorSinkRow(
        sink: "nats:alerts.high:workers", conductor: .publishes(.natsSubject("alerts.high", queueGroup: "workers"))),
    ConductorSinkRow(sink: "nats:alerts:", conductor: .publishes(.natsSubject("alerts", queueGroup: nil))),
    ConductorSinkRow(sink: "nats:a..b", conductor: .publishes(.natsSubject("a..b", queueGroup: nil))),
    ConductorSinkRow(sink: "jsm:audit", conductor: .publishes(.natsSubject("audit", queueGroup: nil))),
    ConductorSinkRow(sink: "jsm:audit:x", conductor: .publishes(.natsSubject("audit", queueGroup: "x"))),
    ConductorSinkRow(
        sink: "nats_stream:legacy:workers", conductor: .publishes(.natsSubject("legacy", queueGroup: "workers"))),
    ConductorSinkRow(
        sink: "jsm:a..b",
        conductor: .fails(
            "JetStream publish: the server refuses a subject with an empty token (sinkd refuses it at ingest, with the reason)"
        )),
    ConductorSinkRow(sink: "kafka:payments", conductor: .publishes(.kafkaTopic("payments"))),
]

@Suite struct ConductorSinkGrammarTests {
    @Test(arguments: conductorSinkGrammar)
    func sinksMeanWhatConductorMakesOfThem(_ row: ConductorSinkRow) {
        let parsed = try? SinkAddress.parse(
            row.sink, workflowType: "orderWf", taskRefName: "notify", sinks: SinkAddressTests.allFamilies,
            configPath: "sinkd.yaml")
        switch (row.conductor, row.differs) {
        case (.publishes(let target), nil):
            #expect(
                parsed?.target == target,
                "Conductor publishes \(row.sink) to \(target); sinkd: \(parsed.map { "\($0.target)" } ?? "refused")")
        case (.fails, nil):
            #expect(parsed == nil, "Conductor fails the task for \(row.sink); so does sinkd (refused at ingest)")
        case (.publishes, .some):
            #expect(parsed == nil, "a documented difference: \(row.differs!)")
        case (.fails, .some):
            #expect(parsed != nil, "a documented difference: \(row.differs!)")
        }
    }
}
