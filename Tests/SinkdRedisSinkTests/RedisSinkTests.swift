import Foundation
import Testing
import SinkdCore
import SinkdDelivery
@testable import SinkdRedisSink
import SinkdTestSupport
import NIOTestUtils
import NIOCore
import NIOPosix
import NIOConcurrencyHelpers

@Suite struct RESPTests {
    /// The reply decoder (XADD replies: no arrays) in every split NIO's verifier tries.
    @Test func theDecoderHandlesEverySplit() throws {
        let pairs: [(String, [RESPValue])] = [
            ("+OK\r\n", [.simpleString("OK")]),
            ("$15\r\n1796644587983-0\r\n", [.bulkString(Array("1796644587983-0".utf8))]),
            ("-ERR no such key\r\n:7\r\n", [.error("ERR no such key"), .integer(7)]),
            ("$-1\r\n", [.bulkString(nil)]),
        ]
        try ByteToMessageDecoderVerifier.verifyDecoder(stringInputOutputPairs: pairs) {
            RESPDecoder(limits: .xaddReplies)
        }
    }

    static func parse(_ text: String) throws -> RESPValue? {
        try Array(text.utf8).withUnsafeBytes { try RESP.parse($0)?.0 }
    }

    @Test func parsesEveryType() throws {
        #expect(try Self.parse("+OK\r\n") == .simpleString("OK"))
        #expect(try Self.parse("-WRONGTYPE Operation against a key\r\n") == .error("WRONGTYPE Operation against a key"))
        #expect(try Self.parse(":42\r\n") == .integer(42))
        #expect(try Self.parse("$5\r\nhe\r\no\r\n") == .bulkString(Array("he\r\no".utf8)), "binary-safe")
        #expect(try Self.parse("$-1\r\n") == .bulkString(nil))
        #expect(
            try Self.parse("*2\r\n$1\r\na\r\n*1\r\n:1\r\n") == .array([.bulkString([0x61]), .array([.integer(1)])]))
        #expect(try Self.parse("*-1\r\n") == .array(nil))
    }

    @Test func needsMoreDataAtEverySplit() throws {
        let whole = "*2\r\n$3\r\nfoo\r\n:7\r\n"
        let bytes = Array(whole.utf8)
        for cut in 0..<bytes.count {
            #expect(try Array(bytes.prefix(cut)).withUnsafeBytes { try RESP.parse($0) } == nil, "cut at \(cut)")
        }
        #expect(try Self.parse(whole) == .array([.bulkString(Array("foo".utf8)), .integer(7)]))
    }

    @Test func rejectsGarbage() {
        #expect(throws: RESP.ProtocolError.self) { try Self.parse("?what\r\n") }
        #expect(throws: RESP.ProtocolError.self) { try Self.parse(":x\r\n") }
        #expect(throws: RESP.ProtocolError.self) { try Self.parse("$3\r\nabcd\r\n") }
    }

    @Test func encodesCommandsAsBulkArrays() {
        var out: [UInt8] = []
        RESP.encodeCommand([Array("XADD".utf8), Array("s".utf8)], into: &out)
        #expect(String(decoding: out, as: UTF8.self) == "*2\r\n$4\r\nXADD\r\n$1\r\ns\r\n")
    }

    @Test func urls() throws {
        let e = try RedisEndpoint(url: "redis://user:p%40ss@redis.local:6380/3")
        #expect(
            e
                == {
                    var x = try! RedisEndpoint(url: "redis://x"); x.host = "redis.local"; x.port = 6380;
                    x.user = "user"; x.password = "p@ss"; x.database = 3; return x
                }())
        let plain = try RedisEndpoint(url: "redis://127.0.0.1:6379/0")
        #expect(plain.password == nil && plain.database == 0)
        #expect(throws: SinkConnectionError.self) { try RedisEndpoint(url: "redis://h:99999") }
    }

    @Test func xaddEncodingIsTheBulkArrayOfItsParts() throws {
        func encoded(_ r: EventRecord, maxlen: Int) throws -> [UInt8] {
            let client = RedisStreamClient(
                stream: "s", endpoint: try RedisEndpoint(url: "redis://x"), maxlen: maxlen, poolSize: 1,
                group: .singletonMultiThreadedEventLoopGroup)
            var out: [UInt8] = []
            client.encodeXADD(r, into: &out)
            return out
        }
        func command(_ parts: [String]) -> [UInt8] {
            var out: [UInt8] = []
            RESP.encodeCommand(parts.map { Array($0.utf8) }, into: &out)
            return out
        }
        var r = EventRecord(id: "t-1", sink: "redis:s", payload: Array(#"{"a":1}"#.utf8))
        r.workflowType = "wf"
        r.workflowVersion = 3
        #expect(
            try encoded(r, maxlen: 100)
                == command([
                    "XADD", "s", "MAXLEN", "~", "100", "*", "id", "t-1", "payload", #"{"a":1}"#, "workflowType", "wf",
                    "workflowVersion", "3",
                ]))
        // Every field, in its order, and no MAXLEN.
        r.workflowInstanceId = "wi-1"
        r.correlationId = "c-1"
        r.taskRefName = "publish"
        r.priority = 7
        #expect(
            try encoded(r, maxlen: 0)
                == command([
                    "XADD", "s", "*", "id", "t-1", "payload", #"{"a":1}"#, "workflowInstanceId", "wi-1", "workflowType",
                    "wf", "correlationId", "c-1", "taskRefName", "publish", "workflowVersion", "3", "priority", "7",
                ]))
    }

    @Test func replyOutcomes() {
        #expect(RedisStreamClient.outcome(.bulkString(Array("1-0".utf8))) == .delivered)
        #expect(
            RedisStreamClient.outcome(.error("LOADING Redis is loading"))
                == .retryable("redis: LOADING Redis is loading"))
        #expect(
            RedisStreamClient.outcome(.error("WRONGTYPE Operation against a key holding the wrong kind of value"))
                == .permanent("redis: WRONGTYPE Operation against a key holding the wrong kind of value"))
    }
}

@Suite(.serialized, .blockingThreads) struct RedisSinkTests {
    static func records(_ n: Int, prefix: String = "r") -> [SequencedRecord] {
        (1...n).map { i in
            var r = EventRecord(id: "\(prefix)\(i)", sink: "redis:orders", payload: Array(#"{"n": \#(i)}"#.utf8))
            r.workflowInstanceId = "wf-\(i)"
            r.correlationId = "c"
            return SequencedRecord(seq: UInt64(i), record: r)
        }
    }

    static func client(
        _ server: RedisServer, url: String? = nil, stream: String = "orders", maxlen: Int = 0
    ) throws -> any SinkClient {
        var config = RedisSinkConfig()
        config.url = url ?? server.url
        config.maxlen = maxlen
        let family = RedisSinkFamily(config: config)
        return try family.makeClient(
            for: try SinkAddress.parse(identity: "redis:\(stream)"), options: ConfigFamily.redis.defaultOptions)
    }

    @Test func xaddsEveryRecordWithItsFields() async throws {
        let server = try RedisServer()
        let client = try Self.client(server)
        let outcomes = try await client.send(Self.records(5))
        #expect(outcomes == Array(repeating: .delivered, count: 5))
        guard case .array(let entries?) = try await server.command(["XRANGE", "orders", "-", "+"]) else {
            Issue.record("no stream")
            return
        }
        #expect(entries.count == 5)
        guard case .array(let first?) = entries[0], case .array(let fields?) = first[1] else {
            Issue.record("unexpected entry shape")
            return
        }
        let strings = fields.compactMap {
            if case .bulkString(let b?) = $0 { String(decoding: b, as: UTF8.self) } else { nil }
        }
        #expect(strings == ["id", "r1", "payload", #"{"n": 1}"#, "workflowInstanceId", "wf-1", "correlationId", "c"])
        await client.close()
    }

    @Test func maxlenTrimsTheStream() async throws {
        let server = try RedisServer()
        let client = try Self.client(server, maxlen: 10)
        for chunk in 0..<20 { _ = try await client.send(Self.records(100, prefix: "c\(chunk)-")) }
        guard case .integer(let length) = try await server.command(["XLEN", "orders"]) else { return }
        #expect(length < 2000, "trimmed (approximately) to about 10 entries, got \(length)")
        await client.close()
    }

    @Test func aKeyOfTheWrongTypeIsAPermanentError() async throws {
        let server = try RedisServer()
        _ = try await server.command(["SET", "orders", "a string"])
        let client = try Self.client(server)
        let outcomes = try await client.send(Self.records(1))
        guard case .permanent(let reason) = outcomes[0] else {
            Issue.record("expected permanent, got \(outcomes)")
            return
        }
        #expect(reason.hasPrefix("redis: WRONGTYPE"))
        await client.close()
    }

    @Test func authenticationAndDatabase() async throws {
        let server = try RedisServer(arguments: ["--requirepass", "s3cret"])
        let good = try Self.client(server, url: "redis://:s3cret@127.0.0.1:\(server.port)/2")
        #expect(try await good.send(Self.records(2)) == [.delivered, .delivered])
        let c = try await RedisConnection.connect(
            host: "127.0.0.1", port: server.port, group: .singletonMultiThreadedEventLoopGroup, timeout: .seconds(5),
            replyTimeout: .seconds(30), limits: .protocolMaximum)
        let replies = try await c.send([
            [Array("AUTH".utf8), Array("s3cret".utf8)], [Array("SELECT".utf8), Array("2".utf8)],
            [Array("XLEN".utf8), Array("orders".utf8)],
        ])
        #expect(replies.last == .integer(2), "written to database 2")
        await c.close()
        let bad = try Self.client(server, url: "redis://:wrong@127.0.0.1:\(server.port)/0")
        await #expect(throws: SinkConnectionError.self, "a refused password pauses the sink instead of failing records")
        {
            _ = try await bad.send(Self.records(1))
        }
        await good.close()
    }

    @Test func aStoppedServerIsAConnectionErrorAndTheClientReconnects() async throws {
        let server = try RedisServer()
        let client = try Self.client(server)
        #expect(try await client.send(Self.records(3)) == Array(repeating: .delivered, count: 3))
        server.stop()
        await #expect(throws: SinkConnectionError.self) { _ = try await client.send(Self.records(3, prefix: "x")) }
        try server.start()
        var delivered = false
        for _ in 0..<50 where !delivered {
            delivered = (try? await client.send(Self.records(3, prefix: "y"))) == Array(repeating: .delivered, count: 3)
            if !delivered { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(delivered)
        await client.close()
    }

    /// A pipeline's sends run on their connection's loop and go straight into its handler,
    /// encoded into the buffer the send before used (issue 30). With redis paused and the socket
    /// full, writes are still queued while the next batches are encoded: every record must arrive
    /// whole, each batch's in its order, and every send get its own replies.
    @Test func sendsOnTheConnectionsLoopKeepTheBytesInFlightIntact() async throws {
        let server = try RedisServer()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let batches = 48
        let perBatch = 25
        func payload(_ batch: Int, _ i: Int) -> [UInt8] {
            (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ batch &* 7 &+ i) }
        }
        try await withTaskExecutorPreference(EventLoopExecutor(loop: loop)) {
            let c = try await RedisConnection.connect(
                host: "127.0.0.1", port: server.port, group: MultiThreadedEventLoopGroup.singleton,
                timeout: .seconds(5), replyTimeout: .seconds(60))
            #expect(c.channel.eventLoop === loop, "connected on the loop the task runs on")
            // A small send buffer (no autotuning) and more bytes (9.8 MB) than a paused receiver's
            // buffer can take: writes stay queued in the channel (a CI machine's kernel took the
            // whole 4 MB this test first sent).
            try await c.channel.setOption(.socketOption(.so_sndbuf), value: 32 << 10).get()
            let queued = NIOLockedValueBox(0)
            server.pause()
            try await withThrowingTaskGroup(of: [RESPValue].self) { group in
                for b in 0..<batches {
                    group.addTask {
                        #expect(loop.inEventLoop, "the send runs on the connection's loop")
                        return try await c.send(replies: perBatch, queued: { queued.withLockedValue { $0 += 1 } }) {
                            out in
                            for i in 0..<perBatch {
                                RESP.encodeCommand(
                                    [
                                        Array("XADD".utf8), Array("orders".utf8), Array("*".utf8), Array("id".utf8),
                                        Array("\(b)-\(i)".utf8), Array("payload".utf8), payload(b, i),
                                    ],
                                    into: &out)
                            }
                        }
                    }
                }
                let deadline = ContinuousClock.now + .seconds(30)
                while queued.withLockedValue({ $0 }) < batches, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(10))
                }
                #expect(queued.withLockedValue { $0 } == batches)
                let unwritten = try await c.channel.getOption(.bufferedWritableBytes).get()
                #expect(unwritten > 0, "writes were still queued behind the paused server while batches were encoded")
                server.resume()
                for try await replies in group {
                    #expect(replies.count == perBatch)
                    #expect(replies.allSatisfy { RedisStreamClient.outcome($0) == .delivered }, "\(replies.prefix(2))")
                }
            }
            await c.close()
        }
        guard case .array(let entries?) = try await server.command(["XRANGE", "orders", "-", "+"]) else {
            Issue.record("no stream")
            return
        }
        #expect(entries.count == batches * perBatch)
        var nextInBatch = [Int](repeating: 0, count: batches)
        for entry in entries {
            guard case .array(let pair?) = entry, case .array(let fields?) = pair[1],
                case .bulkString(let id?) = fields[1], case .bulkString(let body?) = fields[3]
            else {
                Issue.record("unexpected entry \(entry)")
                return
            }
            let parts = String(decoding: id, as: UTF8.self).split(separator: "-").compactMap { Int($0) }
            guard parts.count == 2, parts[0] < batches else {
                Issue.record("unexpected id \(String(decoding: id, as: UTF8.self))")
                return
            }
            #expect(parts[1] == nextInBatch[parts[0]], "batch \(parts[0]) in its order")
            nextInBatch[parts[0]] = parts[1] + 1
            #expect(body == payload(parts[0], parts[1]), "record \(parts[0])-\(parts[1]) arrived whole")
        }
    }

    /// A send on the loop of a connection that is gone fails at once, not at its reply timeout.
    @Test func aSendOnTheLoopOfAClosedConnectionFailsAtOnce() async throws {
        let server = try RedisServer()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        try await withTaskExecutorPreference(EventLoopExecutor(loop: loop)) {
            let c = try await RedisConnection.connect(
                host: "127.0.0.1", port: server.port, group: MultiThreadedEventLoopGroup.singleton,
                timeout: .seconds(5), replyTimeout: .seconds(60))
            #expect(try await c.send([[Array("PING".utf8)]]) == [.simpleString("PONG")])
            await c.close()
            let start = ContinuousClock.now
            await #expect(throws: ChannelError.self) { _ = try await c.send([[Array("PING".utf8)]]) }
            #expect(ContinuousClock.now - start < .seconds(10), "failed at once, not at the 60 s reply timeout")
        }
    }
}
