import Foundation
import Logging
import Testing
import SinkdCore
import SinkdDelivery
import SinkdTestSupport
@testable import SinkdRedisSink

/// The delivery engine into a real redis-server that is killed and restarted mid-stream.
@Suite(.serialized, .blockingThreads) struct RedisEngineTests {
    @Test func redisKilledAndRestartedWhileRecordsStreamLosesNothing() async throws {
        let server = try RedisServer()
        var redis = RedisSinkConfig()
        redis.url = server.url
        redis.options.retry.initialBackoff = .milliseconds(20)
        let engine = try RunningEngine(families: [.redis: RedisSinkFamily(config: redis)]) { $0.sinks.redis = redis }

        let total = 3000
        for chunk in 0..<30 {
            let records = (0..<100).map {
                EventRecord(id: "k\(chunk)-\($0)", sink: "redis:events", payload: Array(#"{"c":\#(chunk)}"#.utf8))
            }
            await engine.append(records)
            if chunk == 10 { server.stop() }
            if chunk == 20 { try server.start() }
            try await Task.sleep(for: .milliseconds(20))
        }
        // Everything arrives, whatever was in flight when redis died (at least once).
        var ids = Set<String>()
        let deadline = ContinuousClock.now + .seconds(60)
        while ids.count < total, ContinuousClock.now < deadline {
            if case .array(let entries?)? = try? await server.command(["XRANGE", "events", "-", "+"]) {
                ids = Set(
                    entries.compactMap { entry -> String? in
                        guard case .array(let e?) = entry, case .array(let fields?) = e[1],
                            case .bulkString(let id?) = fields[1]
                        else { return nil }
                        return String(decoding: id, as: UTF8.self)
                    })
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(ids.count == total, "delivered \(ids.count) of \(total)")
        #expect(try engine.deadLetters.entries().isEmpty, "an outage dead-letters nothing")
        await engine.stop()
    }

    /// Issue 20, item 9: with the default options (one connection, several batches in flight) and
    /// nothing failing, first attempts reach redis in WAL order: the stream's entries are the
    /// records in the order they were accepted. (Before, each batch in flight was its own task and
    /// whole batches overtook each other on the connection.)
    @Test func firstAttemptsArriveInWALOrderWithSeveralBatchesInFlight() async throws {
        let server = try RedisServer()
        var redis = RedisSinkConfig()
        redis.url = server.url
        #expect(redis.options.poolSize == 1 && redis.options.maxInFlight > 1, "the defaults this is about")
        redis.options.batchSize = 16  // many batches, so that an overtaking one shows
        let engine = try RunningEngine(families: [.redis: RedisSinkFamily(config: redis)]) { $0.sinks.redis = redis }
        let total = 5000
        for chunk in 0..<50 {
            await engine.append(
                (0..<100).map {
                    EventRecord(id: "o\(chunk * 100 + $0)", sink: "redis:ordered", payload: Array("{}".utf8))
                })
        }
        var ids: [String] = []
        let deadline = ContinuousClock.now + .seconds(60)
        while ids.count < total, ContinuousClock.now < deadline {
            if case .array(let entries?)? = try? await server.command(["XRANGE", "ordered", "-", "+"]) {
                ids = entries.compactMap { entry -> String? in
                    guard case .array(let e?) = entry, case .array(let fields?) = e[1],
                        case .bulkString(let id?) = fields[1]
                    else { return nil }
                    return String(decoding: id, as: UTF8.self)
                }
            }
            if ids.count < total { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(ids.count == total)
        let firstOutOfOrder = ids.indices.first { ids[$0] != "o\($0)" }
        #expect(
            firstOutOfOrder == nil,
            "entry \(firstOutOfOrder ?? 0) is \(firstOutOfOrder.map { ids[$0] } ?? ""), not o\(firstOutOfOrder ?? 0)")
        await engine.stop()
    }
}
