import Foundation
import SinkdIngest
import SinkdTestSupport
import Testing
import SinkdTestServers

/// Heap calls per record on the ingest and delivery paths, counted by Benchmarks/heapcount.c
/// preloaded into a real daemon: counts are deterministic where CPU times are not, so a change
/// that adds allocations per record fails here rather than only in a benchmark nobody reran
/// (issue 30). One record at a time, each answered before the next: Conductor's pace, where
/// every record is a WAL round and a delivery of its own (the most a record costs).
@Suite(.serialized, .blockingThreads) struct HeapCallTests {
    /// A bound, and what this test measured when it was set, with room for the run-to-run spread
    /// (a delivery that catches two records at once costs less, a round that a timer shares
    /// costs more). docs/PERFORMANCE.md has the benchmark's figures.
    struct Bound {
        var calls: Double
        var bytes: UInt64
        var measured: String
    }

    /// The daemon `swift test` built (debug: most of its heap calls are unspecialized generics
    /// and runtime checks a release build has not, so it shows a change in the release path
    /// diluted) or the release build scripts/test points SINKD_BINARY at (the package's: what a
    /// record costs in production, the figure issue 30 counts).
    static let bounds: [String: Bound] = [
        "file, debug": Bound(
            calls: 330, bytes: 25_500,
            measured:
                "303 - 308 calls, 23,090 - 23,460 bytes (2026-12-07 night; 309 - 314 that evening, 319 - 324 that afternoon, 334 - 343 before 4eed896)"
        ),
        "redis, debug": Bound(
            calls: 375, bytes: 27_000,
            measured: "347 - 351 calls, 23,100 - 23,400 bytes (2026-12-07 night; 352 - 364 before 941497d)"),
        "file, release": Bound(
            calls: 29, bytes: 10_000,
            measured: "26.0 calls, 8,660 - 8,940 bytes (2026-12-07 night; 33.5 - 33.6 before 941497d and 7085411)"),
        "redis, release": Bound(
            calls: 26, bytes: 9_000,
            measured:
                "23.05 - 23.1 calls, 7,580 - 7,860 bytes (2026-12-07 night; 30.8 - 31.1 before 941497d and 7085411)"),
    ]

    /// "debug" or "release", as `sinkd version` says.
    static func build() throws -> String {
        let version = try SinkdProcess.run(["version"])
        return version.stdout.contains("debug build") ? "debug" : "release"
    }

    @Test func heapCallsPerRecordStayWithinTheirBound() async throws {
        try await blocking {
            let dir = try TemporaryDirectory()
            let outbox = dir.path + "/outbox/counted.ndjson"
            try Self.measure(
                in: dir, sinks: "{file: {directory: \(dir.path)/outbox}}", family: "file",
                delivered: {
                    (FileManager.default.contents(atPath: outbox) ?? Data()).reduce(0) { $0 + ($1 == 10 ? 1 : 0) }
                })
        }
    }

    /// The same through the redis sink (a real redis-server): its send path, which the file
    /// sink's does not cover (a send's promises, its buffer, its reply).
    @Test func heapCallsPerRecordThroughRedisStayWithinTheirBound() async throws {
        try await blocking {
            let dir = try TemporaryDirectory()
            let redis = try RedisProcess(directory: dir.path, persistent: false)
            try redis.start()
            defer { redis.stop() }
            try Self.measure(
                in: dir, sinks: "{redis: {url: \"redis://127.0.0.1:\(redis.port)/0\"}}", family: "redis",
                delivered: {
                    let out = try? ServerProcess.run("/usr/bin/redis-cli", ["-p", "\(redis.port)", "XLEN", "counted"])
                    return Int(out?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
                })
        }
    }

    /// Runs a daemon with the heap counter preloaded and `sinks`, sends records to
    /// `family:counted` one at a time, and holds the least of three batches to `bound`.
    static func measure(in dir: TemporaryDirectory, sinks: String, family: String, delivered: () -> Int) throws {
        let build = try build()
        let bound = try #require(bounds["\(family), \(build)"])
        let counter = try HeapCounter.build(into: dir.path)
        let config = try dir.write(
            "sinkd.yaml",
            """
            ingest: {socket: \(dir.path)/ingest.sock}
            control: {socket: \(dir.path)/control.sock}
            wal: {directory: \(dir.path)/wal, fsync: always}
            log: {level: warning, format: logfmt}
            sinks: \(sinks)
            """)
        let daemon = try CrashDurabilityTests.Daemon.start(
            config: config, log: dir.path + "/sinkd.log", environment: counter.environment)
        defer { daemon.stopIfRunning() }
        let client = try daemon.connect(socket: dir.path + "/ingest.sock")
        let payload = String(repeating: "x", count: 1000)

        func sendOneAtATime(_ prefix: String, _ count: Int) {
            for i in 0..<count {
                #expect(
                    client.write(
                        Array(
                            #"{"id":"\#(prefix)\#(i)","sink":"\#(family):counted","payload":{"d":"\#(payload)"}}"#.utf8)
                            + [10]))
                let answer = client.readLine(timeoutMillis: 10_000)
                #expect(answer.flatMap(CrashDurabilityTests.acceptedID) == "\(prefix)\(i)")
            }
        }
        func waitDelivered(_ records: Int) {
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline {
                if delivered() >= records { return }
                usleep(10_000)
            }
            Issue.record("not every record was delivered to \(family):counted in 30 s")
        }

        // Fifty other sinks, their pipelines live and idle meanwhile (a Conductor server has
        // many queues): a record must not cost more for each of them.
        for i in 0..<50 {
            #expect(client.write(Array(#"{"id":"idle-\#(i)","sink":"\#(family):idle\#(i)","payload":{}}"#.utf8) + [10]))
            #expect(client.readLine(timeoutMillis: 10_000).flatMap(CrashDurabilityTests.acceptedID) == "idle-\(i)")
        }
        // Warm up: the pipeline, its connection or file, the dedupe table's first pages.
        sendOneAtATime("warm-", 200)
        waitDelivered(200)
        // Three counted batches; the least is held to the bound. A record's count follows how
        // its rounds and deliveries fall (a delivery that catches two records costs less, one
        // woken for a record still being written costs more), which a busy machine moves
        // both ways: scripts/test runs this suite alone, after the rest, and an allocation
        // added per record raises every batch, the least too.
        let records = 1000
        var batches: [(calls: Double, bytes: UInt64)] = []
        for batch in 0..<3 {
            let before = counter.read()
            #expect(before.calls > 0, "the counter counts (LD_PRELOAD took effect)")
            sendOneAtATime("counted-\(batch)-", records)
            waitDelivered(200 + records * (batch + 1))
            usleep(300_000)  // the checkpoint after the last delivery (checkpoint_interval 250 ms)
            let counted = counter.read() - before
            batches.append((Double(counted.calls) / Double(records), counted.bytes / UInt64(records)))
        }
        let perRecord = batches.map(\.calls).min() ?? .infinity
        let bytesPerRecord = batches.map(\.bytes).min() ?? .max
        print(
            "\(family), \(build) build: heap calls per record, one at a time, three batches: \(batches.map(\.calls)); bytes requested per record: \(batches.map(\.bytes))"
        )
        #expect(
            perRecord <= bound.calls,
            "\(family), \(build) build: \(perRecord) heap calls per record, bound \(bound.calls); measured \(bound.measured) when it was set"
        )
        #expect(
            bytesPerRecord <= bound.bytes,
            "\(family), \(build) build: \(bytesPerRecord) bytes requested per record, bound \(bound.bytes); measured \(bound.measured) when it was set"
        )
    }
}
