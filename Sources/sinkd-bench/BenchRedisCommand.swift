import ArgumentParser
import Foundation
import SinkdIngest
import SinkdTestSupport
import SinkdWAL

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

/// `sinkd-bench redis`: socket → WAL (fsync always) → redis XADD, beside redis-benchmark's own
/// pipelined XADD of the same payload size against the same server, in the same run.
struct BenchRedis: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redis",
        abstract: "End-to-end records/s into a Redis stream, beside redis-benchmark's pipelined XADD.",
        discussion: """
            Starts a private redis-server (Debian's, on a free 127.0.0.1 port, no persistence), \
            measures `redis-benchmark -P 64 XADD` with a --payload-bytes argument, then sends \
            --records records through sinkd and times until all are in the stream. With \
            --backlog-records, also: ingest that many with Redis down, start Redis, time the drain.
            """
    )

    @Option(help: "Where sinkd's WAL is written.") var directory = ".sinkd-bench"
    @Option(help: "Client connections.") var connections = 4
    @Option(help: "Records sent end to end.") var records = 200_000
    @Option(help: "Payload bytes per record.") var payloadBytes = 1024
    @Option(help: "Unacknowledged records a client allows itself.") var window = 500
    @Option(help: "Records in the sink-down backlog phase (0 skips it).") var backlogRecords = 0

    func run() throws {
        let dir = try freshBenchDirectory(directory)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = LoopbackTCP.freePort()
        var redis = try startRedisServer(port: port, dir: dir)
        defer {
            redis.stop()
        }

        // Baseline.
        let value = String(repeating: "x", count: payloadBytes)
        let baselineCount = max(records, 100_000)
        let rb = Process()
        rb.executableURL = URL(fileURLWithPath: "/usr/bin/redis-benchmark")
        rb.arguments = [
            "-p", "\(port)", "-q", "-n", "\(baselineCount)", "-P", "64", "-c", "\(connections)", "XADD", "baseline",
            "*", "payload", value,
        ]
        rb.standardOutput = FileHandle.nullDevice
        rb.standardInput = FileHandle.nullDevice
        let started = monotonicSeconds()
        try rb.run()
        rb.waitUntilExit()
        let baseline = Double(baselineCount) / (monotonicSeconds() - started)
        say(
            "baseline  redis-benchmark -P 64 -c \(connections) XADD with a \(payloadBytes) B field: \(format(baseline)) XADD/s"
        )

        // End to end.
        let config = try writeBenchConfig(
            dir: dir,
            sinks: #"{redis: {url: "redis://127.0.0.1:\#(port)/0", pool_size: 2, max_in_flight: 8, batch_size: 512}}"#)
        let counter = try HeapCounter.build(into: dir)
        let daemon = try startBenchDaemon(
            config: config, socket: dir + "/ingest.sock", environment: counter.environment)
        defer {
            daemon.terminate()
            daemon.waitUntilExit()
        }
        var sampler = RSSSampler(pid: daemon.processIdentifier)
        let cpu0 = cpuSeconds(daemon.processIdentifier), heap0 = counter.read()
        let t0 = monotonicSeconds()
        let group = DispatchGroup()
        for c in 0..<connections {
            group.enter()
            BlockingThread.detach { [payloadBytes, window, records, connections] in
                _ = try? runBenchClient(
                    socket: dir + "/ingest.sock", prefix: "e\(c)-", count: records / connections, rate: 0,
                    payloadBytes: payloadBytes, window: window, sink: "redis:e2e")
                group.leave()
            }
        }
        group.wait()
        let acked = monotonicSeconds() - t0
        let total = (records / connections) * connections
        while xlen(port: port, key: "e2e") < total { usleep(20_000) }
        let elapsed = monotonicSeconds() - t0
        let cpu = cpuSeconds(daemon.processIdentifier) - cpu0, heap = counter.read() - heap0
        say(
            "e2e       \(connections) connections, \(total) records of \(payloadBytes) B, fsync always, socket → WAL → XADD:"
        )
        say(
            "          \(format(Double(total) / elapsed)) records/s delivered (\(format(100 * Double(total) / elapsed / baseline)) % of redis-benchmark); all acknowledged after \(format(acked)) s"
        )
        say(
            "          sinkd CPU \(format(cpu / Double(total) * 1e6)) µs per record (\(format(100 * cpu / elapsed)) % of a core), "
                + "heap calls \(format(Double(heap.calls) / Double(total))) per record (\(format(Double(heap.bytes) / Double(total))) B requested)"
        )
        say("          sinkd peak RSS \(format(Double(sampler.stop()) / 1024)) MiB")

        guard backlogRecords > 0 else { return }
        // Backlog: Redis down while records pile up, then up again.
        redis.stop()
        sampler = RSSSampler(pid: daemon.processIdentifier)
        let perClient = backlogRecords / connections
        let b0 = monotonicSeconds()
        for c in 0..<connections {
            group.enter()
            BlockingThread.detach { [payloadBytes, window] in
                _ = try? runBenchClient(
                    socket: dir + "/ingest.sock", prefix: "b\(c)-", count: perClient, rate: 0,
                    payloadBytes: payloadBytes, window: window, sink: "redis:backlog")
                group.leave()
            }
        }
        group.wait()
        let ingested = perClient * connections
        let bytes = Double(ingested * payloadBytes) / 1_073_741_824
        say(
            "backlog   \(ingested) records (\(format(bytes)) GiB of payload) accepted with Redis down in \(format(monotonicSeconds() - b0)) s; peak RSS \(format(Double(sampler.stop()) / 1024)) MiB"
        )
        sampler = RSSSampler(pid: daemon.processIdentifier)
        redis = try startRedisServer(port: port, dir: dir)
        // The first delivery waits for the sink's reconnect backoff (up to 30 s): timed apart
        // from the drain itself.
        let d0 = monotonicSeconds()
        var first = xlen(port: port, key: "backlog")
        while first <= 0 {
            usleep(10_000)
            first = xlen(port: port, key: "backlog")
        }
        let d1 = monotonicSeconds()
        while xlen(port: port, key: "backlog") < ingested { usleep(50_000) }
        let drain = monotonicSeconds() - d1
        say(
            "drain     reconnected \(format(d1 - d0)) s after Redis was back; then \(format(Double(ingested - first) / drain)) records/s (\(format(drain)) s); peak RSS while draining \(format(Double(sampler.stop()) / 1024)) MiB"
        )
    }
}

/// A private redis-server on 127.0.0.1:`port` (no persistence), once it answers: SinkdTestServers'
/// launcher, the one the tests use.
func startRedisServer(port: Int, dir: String) throws -> RedisProcess {
    let redis = try RedisProcess(directory: dir, port: port, persistent: false)
    try redis.start()
    return redis
}

/// XLEN through redis-cli: -1 when Redis cannot be reached.
func xlen(port: Int, key: String) -> Int { redisCount(port: port, command: "XLEN", key: key) }
