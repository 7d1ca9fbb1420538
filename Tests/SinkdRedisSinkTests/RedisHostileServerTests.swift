import Foundation
import NIOCore
import NIOEmbedded
import Testing
import SinkdCore
import SinkdDelivery
import SinkdTestSupport
@testable import SinkdRedisSink

/// Servers that speak just enough RESP to go wrong (issue 33): each must end in a failure that
/// names its cause within the reply timeout, with memory bounded by what a reply to XADD can hold,
/// and nothing counted as delivered that redis did not store.
// .timeLimit: a guard against a hang, not a measurement. It counts the wait for a blocking test
// slot (BlockingThreads) too, which on a loaded CI machine has taken over a minute.
@Suite(.serialized, .timeLimit(.minutes(5))) struct RedisHostileServerTests {
    static func client(
        _ server: ScriptedTCPServer, replyTimeout: Duration = .milliseconds(500)
    ) throws -> RedisStreamClient {
        RedisStreamClient(
            stream: "s", endpoint: try RedisEndpoint(url: "redis://127.0.0.1:\(server.port)/0"), maxlen: 0,
            replyTimeout: replyTimeout, poolSize: 1, group: .singletonMultiThreadedEventLoopGroup)
    }

    static let record = [
        SequencedRecord(seq: 1, record: EventRecord(id: "r1", sink: "redis:s", payload: Array("{}".utf8)))
    ]

    /// Sends one record; returns the connection error's text and how long it took.
    static func failure(
        _ server: ScriptedTCPServer, replyTimeout: Duration = .milliseconds(500)
    ) async throws -> (String, Duration) {
        let client = try client(server, replyTimeout: replyTimeout)
        defer { Task { await client.close() } }
        let start = ContinuousClock.now
        do {
            let outcomes = try await client.send(record)
            Issue.record("expected a connection error, got \(outcomes)")
            return ("", ContinuousClock.now - start)
        } catch {
            return (error.description, ContinuousClock.now - start)
        }
    }

    /// One timer per connection, armed for the oldest deadline owed: a send answered in time
    /// leaves it armed, and when it fires for that earlier deadline the send now first in line
    /// still gets its own full reply timeout, then fails and the connection closes.
    @Test func eachSendKeepsItsOwnReplyDeadlineWithOneTimer() throws {
        let channel = EmbeddedChannel(handler: RESPClientHandler(replyTimeout: .milliseconds(1000)))
        try channel.connect(to: .init(unixDomainSocketPath: "/none")).wait()
        let loop = channel.embeddedEventLoop
        let first = loop.makePromise(of: [RESPValue].self)
        try channel.writeOutbound((bytes: ByteBuffer(string: "A"), replies: 1, promise: first))
        loop.advanceTime(by: .milliseconds(100))
        try channel.writeInbound(RESPValue.simpleString("1-0"))
        #expect(try first.futureResult.wait() == [.simpleString("1-0")])

        loop.advanceTime(by: .milliseconds(500))  // t = 600
        let second = loop.makePromise(of: [RESPValue].self)
        let failure = FailureBox()  // the embedded loop runs callbacks on this thread
        second.futureResult.whenFailure { failure.error = $0 }
        try channel.writeOutbound((bytes: ByteBuffer(string: "B"), replies: 1, promise: second))
        loop.advanceTime(by: .milliseconds(400))  // t = 1000: the first send's deadline
        #expect(failure.error == nil, "the second send's deadline is 1600, not the first one's")
        #expect(channel.isActive)
        loop.advanceTime(by: .milliseconds(599))  // t = 1599
        #expect(failure.error == nil)
        loop.advanceTime(by: .milliseconds(1))  // t = 1600
        #expect(failure.error is RedisReplyTimeout, "\(String(describing: failure.error))")
        #expect(!channel.isActive, "the connection is closed: the replies owed could no longer be matched")
    }

    @Test func aServerThatNeverAnswersFailsTheBatchAtTheReplyTimeout() async throws {
        let server = try ScriptedTCPServer { _, _ in }
        let (error, took) = try await Self.failure(server)
        #expect(error.contains("no reply within 500 ms"), "\(error)")
        #expect(took >= .milliseconds(450) && took < .seconds(5), "\(took)")
    }

    @Test func aReplyTricklingInIsCutAtTheReplyTimeout() async throws {
        let server = try ScriptedTCPServer { connection, received in
            if !received.isEmpty {
                connection.trickle(
                    Array("$100\r\n".utf8) + Array(repeating: 0x61, count: 100), every: .milliseconds(50))
            }
        }
        let (error, took) = try await Self.failure(server)
        #expect(error.contains("no reply within 500 ms"), "\(error)")
        #expect(took < .seconds(5), "\(took)")
    }

    @Test func aHugeAnnouncedLengthIsRefusedBeforeItIsBuffered() async throws {
        let server = try ScriptedTCPServer { connection, received in
            if !received.isEmpty {
                connection.write("$536870000\r\n")
                connection.flood(Array(repeating: 0, count: 64 << 10), total: 64 << 20)
            }
        }
        let (error, took) = try await Self.failure(server, replyTimeout: .seconds(10))
        #expect(error.contains("more than the 256 this reply can hold"), "\(error)")
        #expect(took < .seconds(5), "refused at the header, not after the body: \(took)")
    }

    @Test func anArrayReplyToXADDIsRefusedAtItsHeader() async throws {
        let server = try ScriptedTCPServer { connection, received in
            if !received.isEmpty {
                connection.write("*1000000\r\n")
                connection.flood(Array(":1\r\n".utf8), total: 4 << 20)
            }
        }
        let (error, _) = try await Self.failure(server, replyTimeout: .seconds(10))
        #expect(error.contains("an array reply"), "\(error)")
    }

    @Test func aFloodOfUnsolicitedRepliesClosesTheConnection() async throws {
        let server = try ScriptedTCPServer { connection, received in
            if received.isEmpty { connection.flood(Array("+PONG\r\n".utf8), total: 16 << 20) }
        }
        let (error, took) = try await Self.failure(server, replyTimeout: .seconds(10))
        #expect(!error.isEmpty)
        #expect(took < .seconds(5), "\(took)")
    }

    /// The review's case: `+PONG` to XADD was counted as delivered (50 of 50, 0 stored).
    @Test func aSimpleStringInReplyToXADDIsNotADelivery() async throws {
        let server = try ScriptedTCPServer { connection, received in
            if !received.isEmpty { connection.write("+PONG\r\n") }
        }
        let (error, _) = try await Self.failure(server)
        #expect(error.contains("answered XADD with +PONG, not an entry id or an error"), "\(error)")
        #expect(RedisStreamClient.outcome(.simpleString("OK")) == nil)
        #expect(RedisStreamClient.outcome(.integer(1)) == nil)
        #expect(
            RedisStreamClient.outcome(.bulkString(Array("hello".utf8))) == nil, "a bulk string that is not an entry id")
        #expect(RedisStreamClient.outcome(.bulkString(nil)) == nil)
        #expect(RedisStreamClient.outcome(.bulkString(Array("1733560000000-0".utf8))) == .delivered)
    }

    /// A type line trickling in a byte at a time is searched once, not from its start at every
    /// byte: what the decoder has searched grows with what arrived.
    @Test func aTricklingLineIsScannedOnce() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPDecoder(limits: .xaddReplies)))
        let line = "-ERR " + String(repeating: "x", count: 3000) + "\r\n"
        for byte in line.utf8 {
            try channel.writeInbound(channel.allocator.buffer(bytes: [byte]))
        }
        #expect(try channel.readInbound(as: RESPValue.self) == .error("ERR " + String(repeating: "x", count: 3000)))
        var decoder = RESPDecoder(limits: .xaddReplies)
        var buffer = ByteBuffer(string: "-ERR abc")
        let context = try EmbeddedChannel(handler: ByteToMessageHandler(RESPDecoder(limits: .xaddReplies))).pipeline
            .syncOperations.context(handlerType: ByteToMessageHandler<RESPDecoder>.self)
        #expect(try decoder.decode(context: context, buffer: &buffer) == .needMoreData)
        #expect(decoder.searchedBytes == 7, "remembers how far it looked")
        buffer.writeString("def")
        #expect(try decoder.decode(context: context, buffer: &buffer) == .needMoreData)
        #expect(decoder.searchedBytes == 10)
        let tooLong = EmbeddedChannel(handler: ByteToMessageHandler(RESPDecoder(limits: .xaddReplies)))
        #expect(throws: (any Error).self) {
            try tooLong.writeInbound(tooLong.allocator.buffer(string: "+" + String(repeating: "y", count: 5000)))
        }
    }

    /// Through the engine: a server that accepts and never answers leaves the sink `down` with
    /// the reason in its status (the review saw it `up`, no error, nothing logged, for ever), and
    /// nothing counted as delivered; once a real redis is there instead, everything arrives.
    @Test(.blockingThreads) func aSilentServerShowsInTheSinksStatusAndARealOneGetsEverything() async throws {
        let silent = try ScriptedTCPServer { _, _ in }
        var redis = RedisSinkConfig()
        redis.url = "redis://127.0.0.1:\(silent.port)/0"
        redis.replyTimeout = .milliseconds(300)
        redis.options.retry.initialBackoff = .milliseconds(20)
        redis.options.retry.maxBackoff = .milliseconds(200)
        let engine = try RunningEngine(families: [.redis: RedisSinkFamily(config: redis)]) { $0.sinks.redis = redis }
        await engine.append((0..<20).map { EventRecord(id: "s\($0)", sink: "redis:silent", payload: Array("{}".utf8)) })
        #expect(await engine.wait(for: "redis:silent", state: .down, timeout: .seconds(20)))
        let snapshot = engine.snapshot(of: "redis:silent")
        #expect(snapshot?.lastError?.contains("no reply within 300 ms") == true, "\(String(describing: snapshot))")
        #expect(snapshot?.delivered == 0)
        await engine.stop()
    }
}

/// What a future failed with, set by its callback on an embedded loop (the test's own thread).
final class FailureBox: @unchecked Sendable {
    var error: (any Error)?
}
