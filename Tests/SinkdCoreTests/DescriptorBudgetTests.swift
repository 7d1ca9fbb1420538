import Testing
@testable import SinkdCore

/// How the descriptor limit is shared out (issue 18, item 2), with plain values.
@Suite struct DescriptorBudgetTests {
    @Test func aRoomyLimitKeepsTheConfiguredNumbers() {
        let b = DescriptorBudget(limit: 524_288, maxConnections: 1024, maxSinks: 1024)
        #expect(b.connections == 1024 && b.sinks == 1024)
        #expect(!b.lowers(maxConnections: 1024, maxSinks: 1024))
    }

    @Test func aShellDefaultOf1024LowersBothAndEverythingFits() {
        let b = DescriptorBudget(limit: 1024, maxConnections: 1024, maxSinks: 1024, sharedConnections: 8, perSink: 2)
        #expect(b.lowers(maxConnections: 1024, maxSinks: 1024))
        #expect(b.reserve + b.connections + b.perSink * b.sinks <= 1024)
        #expect(b.connections == (1024 - 72) / 2)
        #expect(b.sinks > 200)
    }

    @Test func neverZeroAndNeverNegative() {
        for limit in [0, 1, 64, 100, 256, 1000] {
            let b = DescriptorBudget(
                limit: limit, maxConnections: 65_536, maxSinks: 1_000_000, sharedConnections: 10_000, perSink: 9)
            #expect(b.connections >= 1 && b.sinks >= 1, "limit \(limit)")
        }
    }

    @Test func perSinkCostFollowsTheCostliestFamily() {
        var config = SinkdConfig()
        #expect(DescriptorBudget(limit: 4096, config: config).perSink == 1)
        config.sinks.file = FileSinkConfig()
        #expect(DescriptorBudget(limit: 4096, config: config).perSink == 2)
        var redis = RedisSinkConfig()
        redis.options.poolSize = 3
        config.sinks.redis = redis
        #expect(DescriptorBudget(limit: 4096, config: config).perSink == 4)
    }
}
