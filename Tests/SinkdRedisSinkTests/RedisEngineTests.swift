import Foundation
import Logging
import ServiceLifecycle
import Testing
import SinkdCore
import SinkdDelivery
import SinkdWAL
@testable import SinkdRedisSink

/// The delivery engine into a real redis-server that is killed and restarted mid-stream.
@Suite(.serialized) struct RedisEngineTests {
    @Test func redisKilledAndRestartedWhileRecordsStreamLosesNothing() async throws {
        let server = try RedisServer()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-redis-engine-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = SinkdConfig()
        config.wal.directory = dir + "/wal"
        config.delivery.deadLetterDirectory = dir + "/dlq"
        var redis = RedisSinkConfig()
        redis.url = server.url
        redis.options.retry.initialBackoff = .milliseconds(20)
        config.sinks.redis = redis
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let wal = try WriteAheadLog(options: WALOptions(config), logger: logger)
        wal.start()
        let service = DeliveryService(wal: wal, config: config, families: [.redis: RedisSinkFamily(config: redis)],
                                      deadLetters: try DeadLetterStore(directory: config.delivery.deadLetterDirectory), logger: logger)
        let group = ServiceGroup(configuration: .init(services: [.init(service: service)], logger: logger))
        let running = Task { try await group.run() }

        let total = 3000
        for chunk in 0..<30 {
            let records = (0..<100).map { EventRecord(id: "k\(chunk)-\($0)", sink: "redis:events", payload: Array(#"{"c":\#(chunk)}"#.utf8)) }
            let (_, ticket) = wal.append(records, nowMillis: UInt64(Date().timeIntervalSince1970 * 1000))
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in wal.whenDurable(ticket) { _ in c.resume() } }
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
        #expect(try DeadLetterStore(directory: config.delivery.deadLetterDirectory).entries().isEmpty, "an outage dead-letters nothing")
        #expect(!running.isCancelled)
        await group.triggerGracefulShutdown()
        _ = try? await running.value
        wal.shutdown()
    }
}
