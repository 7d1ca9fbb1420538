import Foundation
import Logging
import Testing
import SinkdCore
import SinkdDelivery
import SinkdIngest
import SinkdTestSupport
@testable import SinkdAMQPSink
import SinkdTestServers

/// The AMQP sinks against a real RabbitMQ on 127.0.0.1, read back by an independent client (pika).
@Suite(.serialized, .blockingThreads) struct RabbitMQTests {
    static func server() async throws -> RabbitMQServer { try await RabbitMQServer.shared() }

    static func config(
        _ server: RabbitMQServer, _ configure: (inout AMQPSinkConfig) -> Void = { _ in }
    ) -> AMQPSinkConfig {
        var amqp = AMQPSinkConfig()
        amqp.urls = [server.url]
        amqp.options.retry.initialBackoff = .milliseconds(20)
        amqp.options.retry.maxBackoff = .milliseconds(200)
        configure(&amqp)
        return amqp
    }

    static func engine(_ amqp: AMQPSinkConfig) throws -> (RunningEngine, AMQPSinkFamily) {
        let family = AMQPSinkFamily(config: amqp)
        return (try RunningEngine(families: [.amqp: family]) { $0.sinks.amqp = amqp }, family)
    }

    static func records(_ sink: String, _ range: Range<Int>, prefix: String = "r") -> [EventRecord] {
        range.map { EventRecord(id: "\(prefix)-\($0)", sink: sink, payload: Array(#"{"n":\#($0)}"#.utf8)) }
    }

    /// 0, 1, 2, 5, 6 → "0-2, 5-6": which records are missing, readable in a failure message.
    static func ranges(_ numbers: [Int]) -> String {
        var runs: [(first: Int, last: Int)] = []
        for n in numbers.sorted() {
            if let run = runs.last, run.last + 1 == n {
                runs[runs.count - 1].last = n
            } else {
                runs.append((n, n))
            }
        }
        return runs.map { $0.first == $0.last ? "\($0.first)" : "\($0.first)-\($0.last)" }.joined(separator: ", ")
    }

    static func unique(_ name: String) -> String { "\(name)-\(UUID().uuidString.prefix(6))" }

    @Test func queueSinkSetsEveryProperty() async throws {
        let server = try await Self.server()
        let queue = Self.unique("orders")
        let (engine, family) = try Self.engine(Self.config(server))
        var record = EventRecord(
            id: "evt-1", sink: "amqp_queue:\(queue)?maxPriority=10", payload: Array(#"{"order":1}"#.utf8),
            workflowInstanceId: "wf-1", workflowType: "checkout", correlationId: "corr-9", priority: 7)
        let acceptedAround = Int(Date().timeIntervalSince1970)
        await engine.append([record])
        record.id = "evt-2"
        record.priority = nil
        record.workflowInstanceId = nil
        await engine.append([record])
        #expect(try await server.waitForCount(queue, 2) == 2)
        let messages = try await server.get(queue, max: 2).sorted {
            ($0["message_id"] as? String ?? "") < ($1["message_id"] as? String ?? "")
        }
        #expect(messages.count == 2)
        let m = try #require(messages.first)
        #expect(m["body"] as? String == #"{"order":1}"#)
        #expect(
            m["exchange"] as? String == "" && m["routing_key"] as? String == queue,
            "the default exchange, routing key = queue")
        #expect(m["message_id"] as? String == "evt-1")
        #expect(m["correlation_id"] as? String == "evt-1")
        #expect(m["content_type"] as? String == "application/json")
        #expect(m["content_encoding"] as? String == "UTF-8")
        #expect(m["delivery_mode"] as? Int == 2)
        #expect(m["priority"] as? Int == 7)
        let timestamp = m["timestamp"] as? Int ?? 0
        #expect(
            abs(timestamp - acceptedAround) <= 5, "timestamp = when sinkd accepted the record (seconds): \(timestamp)")
        let headers = m["headers"] as? [String: Any] ?? [:]
        #expect(headers["workflowInstanceId"] as? String == "wf-1")
        #expect(headers["workflowType"] as? String == "checkout")
        #expect(headers["correlationId"] as? String == "corr-9")
        let second = messages[1]
        #expect(second["priority"] is NSNull, "no priority when the record has none")
        #expect((second["headers"] as? [String: Any])?["workflowInstanceId"] == nil)
        await engine.stop()
        await family.shutdown()
    }

    @Test(arguments: ["topic", "direct", "fanout"])
    func exchangeSinkRoutesAsTheBindingsSay(_ type: String) async throws {
        let server = try await Self.server()
        let exchange = Self.unique("billing-\(type)")
        let matching = Self.unique("paid")
        let other = Self.unique("refunded")
        try await server.peer(["bind", exchange, type, matching, type == "topic" ? "invoice.*" : "invoice.paid"])
        try await server.peer(["bind", exchange, type, other, "invoice.refunded"])
        let (engine, family) = try Self.engine(Self.config(server))
        await engine.append(
            Self.records(
                "amqp_exchange:\(exchange)?exchangeType=\(type)&routingKey=invoice.paid&deliveryMode=1", 0..<20))
        #expect(try await server.waitForCount(matching, 20) == 20)
        let got = try await server.get(matching, max: 20)
        #expect(Set(got.compactMap { $0["body"] as? String }) == Set((0..<20).map { #"{"n":\#($0)}"# }))
        #expect(got.allSatisfy { $0["routing_key"] as? String == "invoice.paid" && $0["delivery_mode"] as? Int == 1 })
        // Only fanout also delivers to the queue bound with another key.
        #expect(try await server.count(other) == (type == "fanout" ? 20 : 0))
        await engine.stop()
        await family.shutdown()
    }

    /// Issue 20, items 6 and 7: parameter values are used verbatim as Conductor uses them
    /// (`routingKey=a+b` is the key `a+b`, `a%2Eb` is `a%2Eb`), and queues and exchanges are
    /// declared with Conductor's arguments (x-queue-type always, x-max-priority on both).
    @Test func valuesAreVerbatimAndDeclarationsAreConductors() async throws {
        let server = try await Self.server()
        let exchange = Self.unique("verbatim")
        let plus = Self.unique("plus")
        let percent = Self.unique("percent")
        try await server.peer(["bind", exchange, "direct", plus, "a+b"])
        try await server.peer(["bind", exchange, "direct", percent, "a%2Eb"])
        let queue = Self.unique("prio")
        let declared = Self.unique("declared")
        let (engine, family) = try Self.engine(Self.config(server))
        await engine.append(
            Self.records("amqp_exchange:\(exchange)?exchangeType=direct&routingKey=a+b", 0..<3)
                + Self.records("amqp_exchange:\(exchange)?exchangeType=direct&routingKey=a%2Eb", 3..<6)
                + Self.records("amqp_queue:\(queue)?maxPriority=5", 6..<8))
        #expect(try await server.waitForCount(plus, 3) == 3)
        #expect(try await server.waitForCount(percent, 3) == 3)
        #expect(try await server.get(plus, max: 3).allSatisfy { $0["routing_key"] as? String == "a+b" })
        #expect(try await server.waitForCount(queue, 2) == 2)
        // The queue sinkd declared is the one Conductor declares: redeclaring it Conductor's way is
        // accepted, and its arguments are Conductor's.
        _ = try await server.peer(["conductor-queue", queue, "5"])
        let queues = try await server.ctl(["list_queues", "name", "arguments"])
        let line = queues.split(separator: "\n").first { $0.hasPrefix(queue) }.map(String.init) ?? ""
        #expect(line.contains("x-queue-type") && line.contains("classic") && line.contains("x-max-priority"), "\(line)")
        // An exchange declared by sinkd carries x-max-priority as Conductor's declaration does (its
        // record is unroutable, and dead-lettered: nothing is bound).
        await engine.append(Self.records("amqp_exchange:\(declared)?exchangeType=fanout&maxPriority=7", 8..<9))
        let deadline = ContinuousClock.now + .seconds(20)
        while try engine.deadLetters.entries().isEmpty, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        let exchanges = try await server.ctl(["list_exchanges", "name", "arguments"])
        let exchangeLine = exchanges.split(separator: "\n").first { $0.hasPrefix(declared) }.map(String.init) ?? ""
        #expect(exchangeLine.contains("x-max-priority"), "\(exchangeLine)")
        await engine.stop()
        await family.shutdown()
    }

    /// Issue 20, item 9: on one channel (`pool_size: 1`) with several batches in flight and nothing
    /// failing, the queue holds the records in WAL order.
    @Test func firstAttemptsArriveInWALOrderOnOneChannel() async throws {
        let server = try await Self.server()
        let queue = Self.unique("ordered")
        let (engine, _) = try Self.engine(
            Self.config(server) {
                $0.options.poolSize = 1
                $0.options.batchSize = 16  // many batches, so that an overtaking one shows
            })
        let total = 2000
        for chunk in 0..<(total / 100) {
            await engine.append(Self.records("amqp_queue:\(queue)", (chunk * 100)..<((chunk + 1) * 100)))
        }
        #expect(try await server.waitForCount(queue, total) == total)
        let bodies = try await server.get(queue, max: total).map { $0["body"] as? String ?? "" }
        #expect(bodies.count == total)
        let firstOutOfOrder = bodies.indices.first { bodies[$0] != #"{"n":\#($0)}"# }
        #expect(
            firstOutOfOrder == nil,
            "message \(firstOutOfOrder ?? 0) is \(firstOutOfOrder.map { bodies[$0] } ?? ""), not record \(firstOutOfOrder ?? 0)"
        )
        await engine.stop()
    }

    @Test func unroutableMessagesAreDeadLettered() async throws {
        let server = try await Self.server()
        let exchange = Self.unique("nowhere")
        let (engine, family) = try Self.engine(Self.config(server))
        await engine.append(Self.records("amqp_exchange:\(exchange)?exchangeType=direct&routingKey=nobody", 0..<3))
        let deadline = ContinuousClock.now + .seconds(20)
        while try engine.deadLetters.entries().count < 3, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        let dead = try engine.deadLetters.entries()
        #expect(dead.count == 3)
        #expect(dead.first?.error.contains("unroutable") == true)
        #expect(dead.first?.error.contains("312 NO_ROUTE") == true, "\(dead.first?.error ?? "")")
        #expect(engine.snapshot(of: dead.first?.record.sink ?? "")?.delivered == 0)
        await engine.stop()
        await family.shutdown()
    }

    @Test func aDurableMismatchIsAPermanentErrorWithTheBrokersText() async throws {
        let server = try await Self.server()
        let queue = Self.unique("transient")
        try await server.peer(["declare", queue, "0"])  // exists, not durable
        let (engine, family) = try Self.engine(Self.config(server))
        await engine.append(Self.records("amqp_queue:\(queue)", 0..<4))  // durable=true by default
        let deadline = ContinuousClock.now + .seconds(20)
        while try engine.deadLetters.entries().count < 4, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        let dead = try engine.deadLetters.entries()
        #expect(dead.count == 4)
        let error = dead.first?.error ?? ""
        #expect(error.contains("406") && error.contains("PRECONDITION_FAILED") && error.contains("durable"), "\(error)")
        #expect(try await server.count(queue) == 0)
        await engine.stop()
        await family.shutdown()
    }

    @Test func declareFalsePublishesWithoutDeclaring() async throws {
        let server = try await Self.server()
        let queue = Self.unique("undeclared")
        let (engine, family) = try Self.engine(Self.config(server) { $0.declare = false })
        // Without a declaration nothing creates the queue: the default exchange returns it.
        await engine.append(Self.records("amqp_queue:\(queue)", 0..<1))
        let deadline = ContinuousClock.now + .seconds(20)
        while try engine.deadLetters.entries().isEmpty, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(try await server.count(queue) == -1, "sinkd declared nothing")
        #expect(try engine.deadLetters.entries().first?.error.contains("NO_ROUTE") == true)
        try await server.peer(["declare", queue, "1"])
        await engine.append(Self.records("amqp_queue:\(queue)", 1..<3))
        #expect(try await server.waitForCount(queue, 2) == 2)
        await engine.stop()
        await family.shutdown()
    }

    @Test func refusedCredentialsPauseTheSink() async throws {
        let server = try await Self.server()
        let (engine, family) = try Self.engine(
            Self.config(server) { $0.urls = ["amqp://guest:wrong@127.0.0.1:\(server.port)/%2f"] })
        await engine.append(Self.records("amqp_queue:\(Self.unique("x"))", 0..<2))
        let sink = engine.service.snapshots.first?.sink ?? ""
        let deadline = ContinuousClock.now + .seconds(20)
        while engine.service.snapshots.first?.state != .down, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let error = engine.snapshot(of: engine.service.snapshots.first?.sink ?? sink)?.lastError ?? ""
        #expect(error.contains("refused"), "\(error)")
        #expect(!error.contains("wrong"), "the password is never shown")
        #expect(try engine.deadLetters.entries().isEmpty)
        await engine.stop()
        await family.shutdown()
    }

    @Test func aMemoryAlarmPausesTheSinkUntilItClears() async throws {
        let server = try await Self.server()
        let queue = Self.unique("alarm")
        let (engine, family) = try Self.engine(Self.config(server))
        let sink = "amqp_queue:\(queue)"
        await engine.append(Self.records(sink, 0..<10))
        #expect(try await server.waitForCount(queue, 10) == 10)
        try await server.ctl(["set_vm_memory_high_watermark", "0.0000001"])

        // Publishing meets the alarm: the broker blocks the connection, the sink pauses.
        var n = 10
        let deadline = ContinuousClock.now + .seconds(30)
        while engine.state(of: sink) != .down, ContinuousClock.now < deadline {
            await engine.append(Self.records(sink, n..<(n + 5)))
            n += 5
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(engine.state(of: sink) == .down)
        #expect(
            engine.snapshot(of: sink)?.lastError?.contains("blocked") == true,
            "\(engine.snapshot(of: sink)?.lastError ?? "")")
        try await server.ctl(["set_vm_memory_high_watermark", "0.4"])
        let arrived = try await server.waitForCount(queue, n, timeout: .seconds(60))
        #expect(
            arrived == n,
            "everything arrives once the alarm clears: \(arrived) of \(n); \(String(describing: engine.snapshot(of: sink)))"
        )
        #expect(try engine.deadLetters.entries().isEmpty)
        await engine.stop()
        await family.shutdown()
    }

    @Test func rabbitMQKilledAndRestartedMidStreamLosesNothing() async throws {
        let server = try await RabbitMQServer.make()  // its own node: this test kills it
        let queue = "events"
        let (engine, family) = try Self.engine(Self.config(server))
        let sink = "amqp_queue:\(queue)"
        let total = 2000
        for chunk in 0..<20 {
            await engine.append(Self.records(sink, (chunk * 100)..<((chunk + 1) * 100)))
            if chunk == 6 {
                // RabbitMQ (3.x, metadata in Mnesia) writes a queue declaration to a log it syncs
                // lazily: a node SIGKILLed within moments of declaring a durable queue can come
                // back without the queue, and so without the messages it confirmed into it (seen
                // here as 1400 of 2000, and reproduced with pika alone). That is the broker's
                // durability, not sinkd's: make the declaration durable before the crash.
                _ = try await server.ctl(["eval", "mnesia:sync_log()."])
                try await offThePool { server.kill() }
            }
            if chunk == 13 { try await server.restart() }
            try await Task.sleep(for: .milliseconds(30))
        }
        let arrived = try await server.waitForCount(queue, total, timeout: .seconds(90))
        // What the pipeline was doing, should it not have arrived.
        #expect(
            arrived >= total,
            "\(arrived) of \(total) in the queue; pipeline: \(String(describing: engine.snapshot(of: sink)))")
        let ids = Set(try await server.get(queue, max: 3 * total).compactMap { $0["message_id"] as? String })
        #expect(
            ids.count == total,
            "every record arrived (at least once); missing: \(Self.ranges((0..<total).filter { !ids.contains("r-\($0)") }))"
        )
        if ids.count != total {
            // Keep the broker's log for the diagnosis.
            let kept = FileManager.default.temporaryDirectory.path + "/sinkd-rabbitmq-log-\(server.port)"
            try? FileManager.default.copyItem(atPath: server.directory + "/log", toPath: kept)
            Issue.record("the broker's log is kept in \(kept)")
        }
        #expect(try engine.deadLetters.entries().isEmpty, "an outage dead-letters nothing")
        await engine.stop()
        await family.shutdown()
    }

    @Test func amqpsVerifiesTheBrokerAgainstTheConfiguredCA() async throws {
        let server = try await Self.server()
        let queue = Self.unique("secure")
        let trusted = Self.config(server) {
            $0.urls = ["amqps://guest:guest@127.0.0.1:\(server.tlsPort)/%2f"]
            $0.tls = TLSConfig(caFile: server.certificates.caFile)
        }
        let (engine, family) = try Self.engine(trusted)
        await engine.append(Self.records("amqp_queue:\(queue)", 0..<5))
        #expect(try await server.waitForCount(queue, 5) == 5)
        await engine.stop()
        await family.shutdown()
        // Verification is on by default: without the CA the broker is not trusted.
        let untrusted = Self.config(server) { $0.urls = ["amqps://guest:guest@127.0.0.1:\(server.tlsPort)/%2f"] }
        let (refusing, refusingFamily) = try Self.engine(untrusted)
        let sink = "amqp_queue:\(queue)"
        await refusing.append(Self.records(sink, 10..<11))
        #expect(await refusing.wait(for: sink, state: .down))
        let error = refusing.snapshot(of: sink)?.lastError ?? ""
        #expect(error.lowercased().contains("certificate"), "\(error)")
        await refusing.stop()
        await refusingFamily.shutdown()
    }

    @Test func nackedMessagesAreRetriedThenDeadLettered() async throws {
        let server = try await Self.server()
        let queue = Self.unique("full")
        // A queue that holds 3 messages and nacks publishes beyond (x-overflow: reject-publish).
        try await server.peer(["declare", queue, "1", "3"])
        let (engine, family) = try Self.engine(
            Self.config(server) {
                $0.declare = false
                $0.options.retry.maxAttempts = 3
            })
        await engine.append(Self.records("amqp_queue:\(queue)", 0..<5))
        let deadline = ContinuousClock.now + .seconds(30)
        while try engine.deadLetters.entries().count < 2, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        let dead = try engine.deadLetters.entries()
        #expect(dead.count == 2, "the two that did not fit, after 3 attempts each")
        #expect(dead.allSatisfy { $0.attempts == 3 && $0.error.contains("nacked") }, "\(dead.map(\.error))")
        #expect(try await server.count(queue) == 3)
        #expect(engine.snapshot(of: "amqp_queue:\(queue)")?.retried ?? 0 >= 4)
        await engine.stop()
        await family.shutdown()
    }

    @Test func failsOverToTheNextURL() async throws {
        let server = try await Self.server()
        let queue = Self.unique("failover")
        let dead = "amqp://guest:guest@127.0.0.1:\(LoopbackTCP.freePort())/%2f"
        let (engine, family) = try Self.engine(Self.config(server) { $0.urls = [dead, server.url] })
        await engine.append(Self.records("amqp_queue:\(queue)", 0..<10))
        #expect(try await server.waitForCount(queue, 10) == 10)
        #expect(try engine.deadLetters.entries().isEmpty)
        await engine.stop()
        await family.shutdown()
    }

    /// Issue 33: through a proxy that dropped basic.ack/nack from a real RabbitMQ for 60 s
    /// (heartbeats passing), 50 records were published and the sink stayed `up`, a backlog of 50,
    /// no error, for 90 s after acks flowed again: confirms were waited for forever. Now a batch
    /// whose confirms do not come within `confirm_timeout` fails (the sink is down with the
    /// reason), its channel is closed, and it is sent again on a new one once confirms flow.
    @Test func lostConfirmsAreWaitedForUntilTheConfirmTimeoutOnly() async throws {
        let server = try await Self.server()
        let flag = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sinkd-drop-confirms-\(UUID().uuidString)"
        ).path
        _ = FileManager.default.createFile(atPath: flag, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: flag) }
        let port = LoopbackTCP.freePort()
        let proxy = Process()
        proxy.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        proxy.arguments = [
            "python3",
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
                "Fixtures/confirm_dropping_proxy.py"
            ).path,
            "\(port)", "\(server.port)", flag,
        ]
        proxy.standardOutput = FileHandle.nullDevice
        try proxy.run()
        defer {
            // SIGKILL: a child started from the test process may inherit a mask blocking SIGTERM.
            kill(proxy.processIdentifier, SIGKILL)
            proxy.waitUntilExit()
        }
        let listening = ContinuousClock.now + .seconds(20)
        while !LoopbackTCP.canConnect(port: port), ContinuousClock.now < listening {
            try await Task.sleep(for: .milliseconds(50))
        }
        let queue = Self.unique("confirms")
        let sink = "amqp_queue:\(queue)"
        var amqp = Self.config(server) { $0.confirmTimeout = .seconds(1) }
        amqp.urls = ["amqp://guest:guest@127.0.0.1:\(port)/%2f"]
        let (engine, _) = try Self.engine(amqp)
        await engine.append(Self.records(sink, 0..<50))
        #expect(await engine.wait(for: sink, state: .down, timeout: .seconds(30)), "the missing confirms show")
        let down = engine.snapshot(of: sink)
        #expect(down?.lastError?.contains("no publisher confirm within 1000 ms") == true, "\(String(describing: down))")
        #expect(down?.delivered == 0)
        try FileManager.default.removeItem(atPath: flag)
        #expect(await engine.waitForDelivered(sink, 50, timeout: .seconds(60)) == 50, "sent again once confirms flow")
        #expect(await engine.wait(for: sink, state: .up, timeout: .seconds(10)) || engine.state(of: sink) == .idle)
        #expect(try await server.waitForCount(queue, 50) >= 50, "at least once: the first sends may be there too")
        await engine.stop()
    }
}
