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
            let records = (0..<100).map { EventRecord(id: "k\(chunk)-\($0)", sink: "redis:events", payload: Array(#"{"c":\#(chunk)}"#.utf8)) }
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
                ids = Set(entries.compactMap { entry -> String? in
                    guard case .array(let e?) = entry, case .array(let fields?) = e[1], case .bulkString(let id?) = fields[1] else { return nil }
                    return String(decoding: id, as: UTF8.self)
                })
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(ids.count == total, "delivered \(ids.count) of \(total)")
        #expect(try engine.deadLetters.entries().isEmpty, "an outage dead-letters nothing")
        await engine.stop()
    }
}
