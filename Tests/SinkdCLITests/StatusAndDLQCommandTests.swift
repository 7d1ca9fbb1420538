import Foundation
import Testing
import SinkdCore
import SinkdDelivery

#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct StatusAndDLQCommandTests {
    static func config(_ dir: TemporaryDirectory) throws -> String {
        try dir.write("sinkd.yaml", """
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
        #expect(unreachable.stderr.contains("cannot reach sinkd's control socket \(dir.path)/control.sock (is sinkd running?)"))

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
        try store.append(sink: "file:replayed", (1...3).map { n in
            DeadLetterStore.Entry(seq: UInt64(n), record: EventRecord(id: "d\(n)", sink: "file:replayed", payload: Array(#"{"n":\#(n)}"#.utf8), acceptedAtMillis: now),
                                  error: "connection reset", attempts: 5, firstAttemptMillis: now, lastAttemptMillis: now, deadLetteredMillis: now)
        })
        try store.append(sink: "file:kept", [DeadLetterStore.Entry(seq: 9, record: EventRecord(id: "k", sink: "file:kept", payload: Array("1".utf8)),
                                                                    error: "too large", attempts: 1, firstAttemptMillis: nil, lastAttemptMillis: nil, deadLetteredMillis: now - 7_200_000)])
        let list = try SinkdProcess.run(["dlq", "list", "-c", config])
        #expect(list.status == 0)
        #expect(list.stdout.contains("file:replayed  seq 1  id d1  attempts 5  connection reset"))
        #expect(list.stdout.hasSuffix("4 dead letters\n"))
        #expect(try SinkdProcess.run(["dlq", "list", "-c", config, "--since", "1h"]).stdout.hasSuffix("3 dead letters\n"))
        let show = try SinkdProcess.run(["dlq", "show", "-c", config, "--sink", "file:replayed", "2"])
        #expect(show.stdout.hasPrefix(#"{"seq":2,"sink":"file:replayed","id":"d2","error":"connection reset","attempts":5"#))
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
        while ((try? String(contentsOfFile: outbox, encoding: .utf8)) ?? "").split(separator: "\n").count < 3, Date() < deadline { usleep(20_000) }
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
