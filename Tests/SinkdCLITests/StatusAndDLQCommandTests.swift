import Foundation
import SinkdControl
import Testing
import SinkdIngest
import SinkdCore
import SinkdDelivery

#if canImport(Glibc)
import Glibc
import SinkdTestSupport
import SinkdTestServers
#endif

@Suite(.serialized, .blockingThreads) struct StatusAndDLQCommandTests {
    static func config(_ dir: TemporaryDirectory) throws -> String {
        try dir.write(
            "sinkd.yaml",
            """
            ingest: {socket: \(dir.path)/ingest.sock}
            control: {socket: \(dir.path)/control.sock}
            wal: {directory: \(dir.path)/wal}
            delivery: {dead_letter: {directory: \(dir.path)/dlq}}
            log: {level: warning}
            sinks: {file: {directory: \(dir.path)/outbox}}
            """)
    }

    @Test func statusShowsSinksAndTheWAL() throws {
        let dir = try TemporaryDirectory()
        let config = try Self.config(dir)
        let unreachable = try SinkdProcess.run(["status", "-c", config])
        #expect(unreachable.status == 2)
        #expect(
            unreachable.stderr.contains(
                "cannot reach sinkd's control socket \(dir.path)/control.sock (is sinkd running?)"))

        let daemon = try CrashDurabilityTests.Daemon.start(config: config, log: dir.path + "/sinkd.log")
        _ = try daemon.connect(socket: dir.path + "/ingest.sock")
        defer {
            daemon.process.terminate()
            daemon.process.waitUntilExit()
        }
        let input = (0..<10).map { #"{"id":"s\#($0)","sink":"file:status","payload":\#($0)}"# }.joined(separator: "\n")
        #expect(try SinkdProcess.run(["send", "-c", config], stdin: Data(input.utf8)).status == 0)
        var delivered = 0
        let deadline = Date().addingTimeInterval(10)
        var json: [String: Any] = [:]
        while delivered < 10, Date() < deadline {
            let out = try SinkdProcess.run(["status", "-c", config, "--json"])
            #expect(out.status == 0)
            json = (try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any]) ?? [:]
            let sinks = json["sinks"] as? [[String: Any]] ?? []
            delivered = sinks.first { $0["sink"] as? String == "file:status" }?["delivered"] as? Int ?? 0
            usleep(50_000)
        }
        #expect(delivered == 10)
        #expect(json["walNextSeq"] as? Int == 11)
        #expect(json["configGeneration"] as? Int == 1)
        let table = try SinkdProcess.run(["status", "-c", config])
        #expect(table.status == 0)
        #expect(table.stdout.contains("SINK"))
        #expect(table.stdout.contains("file:status"))
        #expect(table.stdout.contains("WAL: "))
    }

    @Test func deadLettersCanBeListedShownReplayedAndPurged() throws {
        let dir = try TemporaryDirectory()
        let config = try Self.config(dir)
        let store = try DeadLetterStore(directory: dir.path + "/dlq")
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        try store.append(
            sink: "file:replayed",
            (1...3).map { n in
                DeadLetterStore.Entry(
                    seq: UInt64(n),
                    record: EventRecord(
                        id: "d\(n)", sink: "file:replayed", payload: Array(#"{"n":\#(n)}"#.utf8), acceptedAtMillis: now),
                    error: "connection reset", attempts: 5, firstAttemptMillis: now, lastAttemptMillis: now,
                    deadLetteredMillis: now)
            })
        try store.append(
            sink: "file:kept",
            [
                DeadLetterStore.Entry(
                    seq: 9, record: EventRecord(id: "k", sink: "file:kept", payload: Array("1".utf8)),
                    error: "too large", attempts: 1, firstAttemptMillis: nil, lastAttemptMillis: nil,
                    deadLetteredMillis: now - 7_200_000)
            ])
        let list = try SinkdProcess.run(["dlq", "list", "-c", config])
        #expect(list.status == 0)
        #expect(list.stdout.contains("file:replayed  seq 1  id d1  attempts 5  connection reset"))
        #expect(list.stdout.hasSuffix("4 dead letters\n"))
        #expect(
            try SinkdProcess.run(["dlq", "list", "-c", config, "--since", "1h"]).stdout.hasSuffix("3 dead letters\n"))
        let show = try SinkdProcess.run(["dlq", "show", "-c", config, "--sink", "file:replayed", "2"])
        #expect(
            show.stdout.hasPrefix(#"{"seq":2,"sink":"file:replayed","id":"d2","error":"connection reset","attempts":5"#)
        )
        #expect(show.stdout.hasSuffix(#","payload":{"n":2}}"# + "\n"))

        let daemon = try CrashDurabilityTests.Daemon.start(config: config, log: dir.path + "/sinkd.log")
        _ = try daemon.connect(socket: dir.path + "/ingest.sock")
        defer {
            daemon.process.terminate()
            daemon.process.waitUntilExit()
        }
        let replay = try SinkdProcess.run(["dlq", "replay", "-c", config, "--sink", "file:replayed"])
        #expect(replay.status == 0)
        #expect(replay.stdout == "replayed 3 dead letters into the WAL\n")
        let outbox = dir.path + "/outbox/replayed.ndjson"
        let deadline = Date().addingTimeInterval(10)
        while ((try? String(contentsOfFile: outbox, encoding: .utf8)) ?? "").split(separator: "\n").count < 3,
            Date() < deadline
        { usleep(20_000) }
        #expect((try? String(contentsOfFile: outbox, encoding: .utf8)) == "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n")
        #expect(try store.entries(sink: "file:replayed").isEmpty)
        let purge = try SinkdProcess.run(["dlq", "purge", "-c", config, "--until", "1h"])
        #expect(purge.stdout == "purged 1 dead letters\n")
        #expect(try store.entries().isEmpty)
        let bad = try SinkdProcess.run(["dlq", "list", "-c", config, "--since", "yesterday"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("'yesterday' is neither an age like 2h nor an ISO 8601 time"))
    }
}

/// Issue 18, item 10: a hand-edited dead-letter line that ingest would refuse (a 70,000-byte
/// workflowType: the old replay hit a precondition in the record codec and killed the daemon)
/// gets a per-line error and stays in the store; the good lines are replayed; sinkd keeps running.
@Suite(.serialized, .blockingThreads) struct DLQReplayValidationTests {
    @Test func anEditedLineThatWouldNotPassIngestIsNamedAndKept() throws {
        let dir = try TemporaryDirectory()
        let config = try StatusAndDLQCommandTests.config(dir)
        let store = try DeadLetterStore(directory: dir.path + "/dlq")
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        var huge = EventRecord(id: "huge", sink: "file:edited", payload: Array("1".utf8), acceptedAtMillis: now)
        huge.workflowType = String(repeating: "w", count: 70_000)
        let good = EventRecord(
            id: "good", sink: "file:edited", payload: Array(#"{"ok":1}"#.utf8), acceptedAtMillis: now)
        try store.append(
            sink: "file:edited",
            [
                DeadLetterStore.Entry(
                    seq: 1, record: huge, error: "x", attempts: 1, firstAttemptMillis: nil, lastAttemptMillis: nil,
                    deadLetteredMillis: now),
                DeadLetterStore.Entry(
                    seq: 2, record: good, error: "x", attempts: 1, firstAttemptMillis: nil, lastAttemptMillis: nil,
                    deadLetteredMillis: now),
            ])
        let daemon = try CrashDurabilityTests.Daemon.start(config: config, log: dir.path + "/sinkd.log")
        _ = try daemon.connect(socket: dir.path + "/ingest.sock")
        defer { daemon.stopIfRunning() }
        let replay = try SinkdProcess.run(["dlq", "replay", "-c", config, "--sink", "file:edited"])
        #expect(replay.status == 1)
        #expect(replay.stdout == "replayed 1 dead letters into the WAL\n")
        #expect(replay.stderr.contains("seq 1 (file:edited) not replayed"), "\(replay.stderr)")
        #expect(replay.stderr.contains("workflowType"), "the reason names the field: \(replay.stderr)")
        #expect(daemon.process.isRunning, "the daemon is alive")
        #expect(
            try store.entries(sink: "file:edited").map(\.record.id) == ["huge"], "the bad line stays, the good one left"
        )
    }
}

@Suite(.serialized, .blockingThreads) struct MetricsEndpointTests {
    /// GET over a plain TCP socket: the response's body.
    static func get(port: Int, path: String) -> (status: String, body: String) {
        LoopbackTCP.get(port: port, path: path)
    }

    /// A daemon with the metrics endpoint on a free port; `more` is the rest of its configuration.
    static func daemonWithMetrics(
        _ dir: TemporaryDirectory, _ more: String
    ) throws -> (config: String, port: Int, daemon: CrashDurabilityTests.Daemon) {
        let port = LoopbackTCP.freePort()
        let config = try dir.write(
            "sinkd.yaml",
            """
            ingest: {socket: \(dir.path)/ingest.sock}
            control: {socket: \(dir.path)/control.sock}
            wal: {directory: \(dir.path)/wal}
            log: {level: warning}
            metrics: {listen: "127.0.0.1:\(port)"}
            \(more)
            """)
        return (config, port, try CrashDurabilityTests.Daemon.start(config: config, log: dir.path + "/sinkd.log"))
    }

    @Test func everyDocumentedMetricIsExported() throws {
        let dir = try TemporaryDirectory()
        let (config, port, daemon) = try Self.daemonWithMetrics(dir, "sinks: {file: {directory: \(dir.path)/outbox}}")
        _ = try daemon.connect(socket: dir.path + "/ingest.sock")
        defer {
            daemon.process.terminate()
            daemon.process.waitUntilExit()
        }
        let input = [
            #"{"id":"m1","sink":"file:m","payload":1}"#, #"{"id":"m1","sink":"file:m","payload":1}"#,
            #"{"id":"m2","sink":"nope","payload":1}"#,
        ].joined(separator: "\n")
        _ = try SinkdProcess.run(["send", "-c", config], stdin: Data(input.utf8))
        var body = ""
        let deadline = Date().addingTimeInterval(10)
        while !body.contains(#"sinkd_delivered_total{sink="file:m"} 1"#), Date() < deadline {
            body = Self.get(port: port, path: "/metrics").body
            usleep(50_000)
        }
        for line in [
            #"sinkd_ingest_records_total{result="accepted"} 1"#,
            #"sinkd_ingest_records_total{result="duplicate"} 1"#,
            #"sinkd_ingest_rejected_total{code="invalid_sink"} 1"#,
            #"sinkd_delivered_total{sink="file:m"} 1"#,
            #"sinkd_retried_total{sink="file:m"} 0"#,
            #"sinkd_dead_lettered_total{sink="file:m"} 0"#,
            #"sinkd_delivery_latency_seconds_count{sink="file:m"} 1"#,
            #"sinkd_backlog_records{sink="file:m"} 0"#,
            #"sinkd_backlog_bytes{sink="file:m"} 0"#,
            #"sinkd_backlog_oldest_seconds{sink="file:m"} 0"#,
            #"sinkd_sink_up{sink="file:m"} 1"#,
            "sinkd_wal_bytes ", "sinkd_wal_segments ", "sinkd_wal_fsync_seconds_count ",
            "sinkd_wal_corrupt_frames_at_start 0", "sinkd_wal_next_seq 2",
        ] {
            #expect(body.contains(line), "missing: \(line)")
        }
        #expect(Self.get(port: port, path: "/elsewhere").status == "HTTP/1.1 404 Not Found")
    }

    /// The shipped rules (Config/prometheus/sinkd-rules.yaml) are valid, and their promtool unit
    /// tests pass: every alert fires when it should and stays silent when it should not. Every
    /// alert has a test there.
    @Test func alertingRulesPassPromtool() throws {
        let promtool = "/usr/bin/promtool"
        try #require(
            FileManager.default.isExecutableFile(atPath: promtool),
            "promtool missing: apt-get install prometheus (scripts/test installs it)")
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "../../Config/prometheus"
        ).standardized.path
        let check = try SinkdProcess.runTool(promtool, ["check", "rules", dir + "/sinkd-rules.yaml"])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        let test = try SinkdProcess.runTool(promtool, ["test", "rules", dir + "/sinkd-rules.test.yaml"])
        #expect(test.status == 0 && test.stdout.contains("SUCCESS"), "\(test.stdout)\(test.stderr)")
        func names(_ file: String, _ pattern: String) throws -> Set<String> {
            let text = try String(contentsOfFile: dir + "/" + file, encoding: .utf8)
            let regex = try Regex(pattern)
            return Set(text.matches(of: regex).compactMap { $0.output[1].substring.map(String.init) })
        }
        let alerts = try names("sinkd-rules.yaml", #"- alert: (\w+)"#)
        let tested = try names("sinkd-rules.test.yaml", #"alertname: (\w+)"#)
        #expect(alerts.count >= 12)
        #expect(alerts.subtracting(tested).isEmpty, "alerts without a promtool test: \(alerts.subtracting(tested))")
    }

    /// `promtool check metrics` (Prometheus's own linter, Debian's prometheus package) on a live
    /// exposition with several sinks, one of them failing: no series without HELP, no bad name.
    /// Before the catalogue it flagged seven series recorded through swift-metrics.
    @Test func prometheusLintsTheExpositionClean() throws {
        let promtool = "/usr/bin/promtool"
        try #require(
            FileManager.default.isExecutableFile(atPath: promtool),
            "promtool missing: apt-get install prometheus (scripts/test installs it)")
        let dir = try TemporaryDirectory()
        let (config, port, daemon) = try Self.daemonWithMetrics(
            dir,
            """
            delivery: {retry: {initial_backoff: 10ms, max_backoff: 50ms}}
            sinks: {file: {directory: \(dir.path)/outbox}, http: {endpoints: {closed: {url: "http://127.0.0.1:\(LoopbackTCP.freePort())/"}}}}
            """)
        _ = try daemon.connect(socket: dir.path + "/ingest.sock")
        defer {
            daemon.process.terminate()
            daemon.process.waitUntilExit()
        }
        let input = [
            #"{"id":"a","sink":"file:one","payload":1}"#, #"{"id":"b","sink":"file:two","payload":1}"#,
            #"{"id":"c","sink":"http:closed","payload":1}"#, #"{"id":"d","sink":"nope","payload":1}"#,
        ].joined(separator: "\n")
        _ = try SinkdProcess.run(["send", "-c", config], stdin: Data(input.utf8))
        var body = ""
        let deadline = Date().addingTimeInterval(10)
        while !(body.contains(#"sinkd_delivered_total{sink="file:two"} 1"#)
            && body.contains(#"sinkd_backlog_records{sink="http:closed"} 1"#)), Date() < deadline
        {
            body = Self.get(port: port, path: "/metrics").body
            usleep(50_000)
        }
        #expect(
            body.contains(#"sinkd_ingest_rejected_total{code="invalid_sink"} 1"#),
            "every kind of series is in the exposition")
        let lint = try SinkdProcess.runTool(promtool, ["check", "metrics"], stdin: Data(body.utf8))
        #expect(
            lint.status == 0 && lint.stdout.isEmpty && lint.stderr.isEmpty, "promtool: \(lint.stdout)\(lint.stderr)")
        // Every series has its HELP from the catalogue, and the catalogue names nothing sinkd never exports.
        let names = Set(
            body.split(separator: "\n").filter { !$0.hasPrefix("#") }.compactMap { line -> String? in
                let name = line.prefix { $0 != "{" && $0 != " " }
                for suffix in ["_bucket", "_sum", "_count"]
                where name.hasSuffix(suffix) && MetricCatalogue.help[String(name.dropLast(suffix.count))] != nil {
                    return String(name.dropLast(suffix.count))
                }
                return String(name)
            })
        #expect(
            names == Set(MetricCatalogue.help.keys),
            "exported but not in the catalogue: \(names.subtracting(MetricCatalogue.help.keys)); in the catalogue, not exported: \(Set(MetricCatalogue.help.keys).subtracting(names))"
        )
        for name in names {
            #expect(body.contains("# HELP \(name) \(MetricCatalogue.help[name] ?? "?")"), "HELP of \(name)")
        }
    }
}
