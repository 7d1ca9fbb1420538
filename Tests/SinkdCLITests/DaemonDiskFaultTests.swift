import Foundation
import Testing
import SinkdIngest
import SinkdWAL
import SinkdTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The daemon itself under disk faults: SIGTERM while the WAL's disk is full, and a second
/// daemon on the same WAL directory.
@Suite(.serialized, .blockingThreads) struct DaemonDiskFaultTests {
    static func config(
        _ dir: TemporaryDirectory, wal: String, name: String = "sinkd.yaml", sockets: String = ""
    ) throws -> String {
        try dir.write(
            name,
            """
            ingest: {socket: \(dir.path)/ingest\(sockets).sock, max_record_bytes: 64KiB}
            control: {socket: \(dir.path)/control\(sockets).sock}
            wal: {directory: \(wal), segment_size: 256KiB, max_size: 1GiB, when_full: block}
            log: {level: info, format: logfmt}
            sinks: {http: {endpoints: {dead: {url: "http://127.0.0.1:9/never"}}}}
            """)
    }

    @Test func sigtermEndsAFullDiskWaitAndEveryAcceptedRecordStays() throws {
        let fs = try SmallFileSystem(bytes: 2 << 20)
        let dir = try TemporaryDirectory()
        let daemon = try CrashDurabilityTests.Daemon.start(
            config: try Self.config(dir, wal: fs.path + "/wal"), log: dir.path + "/sinkd.log")
        defer { daemon.stopIfRunning() }
        let client = try daemon.connect(socket: dir.path + "/ingest.sock")
        let pad = String(repeating: "p", count: 1000)
        var accepted = Set<String>()
        var sent = 0
        // Fill the disk: keep sending until nothing has been answered for 3 s (clients wait).
        var quietSince = Date()
        while Date().timeIntervalSince(quietSince) < 3 {
            if sent < 4000 {
                var chunk: [UInt8] = []
                for _ in 0..<20 {
                    chunk +=
                        Array(#"{"id":"d\#(sent)","sink":"http:dead","payload":{"pad":"\#(pad)"}}"#.utf8) + [
                            UInt8(ascii: "\n")
                        ]
                    sent += 1
                }
                _ = client.write(chunk)
            }
            while let line = client.readLine(timeoutMillis: 50) {
                quietSince = Date()
                if let id = CrashDurabilityTests.acceptedID(line) { accepted.insert(id) }
            }
        }
        #expect(sent > accepted.count, "the disk filled before every record was accepted")
        #expect(!accepted.isEmpty)
        let stopped = Date()
        kill(daemon.process.processIdentifier, SIGTERM)
        while daemon.process.isRunning, Date().timeIntervalSince(stopped) < 20 { usleep(50_000) }
        #expect(!daemon.process.isRunning, "SIGTERM ends sinkd within 20 s whatever the disk does")
        if daemon.process.isRunning { kill(daemon.process.processIdentifier, SIGKILL) }
        daemon.process.waitUntilExit()
        #expect(daemon.process.terminationStatus == 0)
        while let line = client.readLine(timeoutMillis: 200) {
            if let id = CrashDurabilityTests.acceptedID(line) { accepted.insert(id) }
        }
        var inWAL = Set<String>()
        _ = try WALInspector.inspect(directory: fs.path + "/wal") { inWAL.insert($0.record.id) }
        let missing = accepted.subtracting(inWAL)
        #expect(missing.isEmpty, "\(missing.count) accepted records missing from the WAL, e.g. \(missing.prefix(3))")
        let log = (try? String(contentsOfFile: dir.path + "/sinkd.log", encoding: .utf8)) ?? ""
        #expect(log.contains("the disk holding the WAL is full"), "the full disk is reported")
        #expect(!log.contains("watchdog"), "no watchdog complaint")
        let failureLines = log.components(separatedBy: "\n").filter { $0.contains("a WAL write or fdatasync failed") }
            .count
        #expect(failureLines <= 4, "repeated write errors are rate-limited in the log (\(failureLines) lines)")
    }

    @Test func aSecondDaemonOnTheSameWALExits78NamingTheHolder() throws {
        let dir = try TemporaryDirectory()
        let wal = dir.path + "/wal"
        let first = try CrashDurabilityTests.Daemon.start(
            config: try Self.config(dir, wal: wal), log: dir.path + "/first.log")
        defer { first.stopIfRunning() }
        _ = try first.connect(socket: dir.path + "/ingest.sock")
        let second = try CrashDurabilityTests.Daemon.start(
            config: try Self.config(dir, wal: wal, name: "second.yaml", sockets: "2"), log: dir.path + "/second.log")
        let started = Date()
        while second.process.isRunning, Date().timeIntervalSince(started) < 20 { usleep(20_000) }
        #expect(!second.process.isRunning, "the second sinkd refuses to start")
        if second.process.isRunning { kill(second.process.processIdentifier, SIGKILL) }
        second.process.waitUntilExit()
        #expect(second.process.terminationStatus == 78)
        let log = (try? String(contentsOfFile: dir.path + "/second.log", encoding: .utf8)) ?? ""
        #expect(
            log.contains("another sinkd (pid \(first.process.processIdentifier))"),
            "the message names the holder: \(log.suffix(400))")
        #expect(first.process.isRunning, "the first daemon is untouched")
        // The offline tools only read: they work beside the running daemon.
        let verify = try SinkdProcess.run(["wal", "verify", wal])
        #expect(verify.status == 0, "wal verify beside a running sinkd: \(verify.stdout) \(verify.stderr)")
        let dump = try SinkdProcess.run(["wal", "dump", wal])
        #expect(dump.status == 0, "wal dump beside a running sinkd: \(dump.stderr)")
    }
}
