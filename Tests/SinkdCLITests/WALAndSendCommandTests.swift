import Foundation
import Testing

#if canImport(Glibc)
import Glibc
import SinkdTestSupport
#endif

/// `sinkd run`, `sinkd send` and `sinkd wal verify|dump` as an operator uses them.
@Suite(.serialized, .blockingThreads) struct WALAndSendCommandTests {
    /// The file sink's directory lies under a regular file, so delivery fails (the sink pauses
    /// and retries) and every record stays in the WAL for these tests to inspect.
    static func config(_ dir: TemporaryDirectory) throws -> String {
        try dir.write("blocker", "not a directory")
        return try dir.write(
            "sinkd.yaml",
            """
            ingest: {socket: \(dir.path)/ingest.sock, max_record_bytes: 64KiB}
            control: {socket: \(dir.path)/control.sock}
            wal: {directory: \(dir.path)/wal, segment_size: 256KiB}
            log: {level: critical}
            sinks: {file: {directory: \(dir.path)/blocker/outbox}}
            """)
    }

    @Test func sendThenVerifyAndDumpThenStopGracefully() throws {
        let dir = try TemporaryDirectory()
        let config = try Self.config(dir)
        let daemon = try CrashDurabilityTests.Daemon.start(config: config, log: dir.path + "/sinkd.log")
        _ = try daemon.connect(socket: dir.path + "/ingest.sock")

        let one = try SinkdProcess.run([
            "send", "-c", config, "--sink", "file:events", "--id", "t-1", "--payload", #"{"a": 1}"#,
        ])
        #expect(one.status == 0)
        #expect(one.stdout == #"{"id":"t-1","status":"accepted","seq":1}"# + "\n")

        let input =
            (2...50).map { #"{"id":"t-\#($0)","sink":"file:events","payload":[\#($0)]}"# }.joined(separator: "\n")
            + "\n"
        let many = try SinkdProcess.run(["send", "--socket", dir.path + "/ingest.sock"], stdin: Data(input.utf8))
        #expect(many.status == 0)
        #expect(many.stdout.split(separator: "\n").count == 49)

        let bad = try SinkdProcess.run(
            ["send", "-c", config],
            stdin: Data(
                (#"{"id":"x","sink":"nope","payload":1}"# + "\n" + #"{"id":"t-1","sink":"file:events","payload":1}"#
                    + "\n").utf8))
        #expect(bad.status == 1, "a rejected record makes send fail")
        #expect(bad.stdout.contains(#""code":"invalid_sink""#))
        #expect(bad.stdout.contains(#""status":"duplicate""#))

        daemon.process.terminate()
        daemon.process.waitUntilExit()
        #expect(daemon.process.terminationStatus == 0, "SIGTERM stops sinkd gracefully")

        let verify = try SinkdProcess.run(["wal", "verify", dir.path + "/wal"])
        #expect(verify.status == 0)
        #expect(verify.stdout.hasSuffix("50 records: OK\n"))
        let dump = try SinkdProcess.run(["wal", "dump", "-c", config, "--sink", "file:events"])
        #expect(dump.status == 0)
        let lines = dump.stdout.split(separator: "\n")
        #expect(lines.count == 50)
        #expect(lines.first?.hasPrefix(#"{"seq":1,"sink":"file:events","id":"t-1","acceptedAt":"#) == true)
        #expect(lines.first?.hasSuffix(#","payload":{"a": 1}}"#) == true, "the payload exactly as sent")
    }

    /// `sinkd send` streams standard input: 100 MB piped in, its peak RSS stays far below what
    /// reading it whole took (it read all of stdin first: 423 MB for 200,000 records), every line
    /// is answered, blank lines are skipped and a last line without a newline is sent.
    @Test func sendStreamsStandardInputInBoundedMemory() throws {
        let dir = try TemporaryDirectory()
        let config = try dir.write(
            "sinkd.yaml",
            """
            ingest: {socket: \(dir.path)/ingest.sock}
            control: {socket: \(dir.path)/control.sock}
            wal: {directory: \(dir.path)/wal, fsync: never, max_size: 1GiB}
            log: {level: critical}
            sinks: {file: {directory: \(dir.path)/outbox}}
            """)
        let daemon = try CrashDurabilityTests.Daemon.start(config: config, log: dir.path + "/sinkd.log")
        defer { daemon.stopIfRunning() }
        _ = try daemon.connect(socket: dir.path + "/ingest.sock")
        let records = 100_000
        let pad = String(repeating: "x", count: 1000)
        let input = dir.path + "/input.ndjson"
        #expect(FileManager.default.createFile(atPath: input, contents: nil))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: input))
        var chunk = ""
        for i in 0..<records {
            chunk += #"{"id":"big-\#(i)","sink":"file:big","payload":{"d":"\#(pad)"}}"#
            chunk += i % 1000 == 0 ? "\n  \r\n\n" : (i == records - 1 ? "" : "\n")
            if chunk.utf8.count > 1 << 20 {
                handle.write(Data(chunk.utf8))
                chunk = ""
            }
        }
        handle.write(Data(chunk.utf8))
        try handle.close()

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, input, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, dir.path + "/answers", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let argv = [SinkdProcess.executable.path, "send", "--socket", dir.path + "/ingest.sock"]
        var cargs = argv.map { strdup($0) } + [nil]
        defer { for arg in cargs { free(arg) } }
        var pid: pid_t = 0
        try #require(posix_spawn(&pid, argv[0], &actions, nil, &cargs, environ) == 0)
        // Its own peak, VmHWM, read while it runs (the high-water mark of its address space).
        // Not wait4's ru_maxrss: posix_spawn's child shares this test process's memory until it
        // execs, and the kernel keeps that mark too (a loaded test process read as 591 MiB).
        var status: Int32 = 0
        var peakKiB = 0
        while true {
            let done = waitpid(pid, &status, WNOHANG)
            if done == pid { break }
            if done < 0, errno != EINTR { break }
            if let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
                let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
                let kib = Int(line.split(separator: " ").dropFirst().first ?? "")
            {
                peakKiB = max(peakKiB, kib)
            }
            usleep(20_000)
        }
        #expect(status == 0, "every record accepted: exit 0")
        #expect(peakKiB > 0, "its peak was read while it ran")
        let answers = try String(contentsOfFile: dir.path + "/answers", encoding: .utf8).split(separator: "\n")
        #expect(answers.count == records, "one answer per non-blank line")
        #expect(
            answers.last?.hasPrefix(#"{"id":"big-\#(records - 1)","status":"accepted""#) == true,
            "the last line, without a newline, was sent")
        let peakMiB = peakKiB / 1024
        #expect(peakMiB < 80, "sinkd send's peak RSS \(peakMiB) MiB for \(records) records (~100 MB) piped in")
    }

    @Test func verifyReportsCorruptionWithExitOne() throws {
        let dir = try TemporaryDirectory()
        let config = try Self.config(dir)
        let daemon = try CrashDurabilityTests.Daemon.start(config: config, log: dir.path + "/sinkd.log")
        _ = try daemon.connect(socket: dir.path + "/ingest.sock")
        let input = (1...5).map {
            #"{"id":"c-\#($0)","sink":"file:events","payload":"\#(String(repeating: "z", count: 100))"}"#
        }.joined(separator: "\n")
        _ = try SinkdProcess.run(["send", "-c", config], stdin: Data(input.utf8))
        daemon.process.terminate()
        daemon.process.waitUntilExit()
        let segment = try FileManager.default.contentsOfDirectory(atPath: dir.path + "/wal").filter {
            $0.hasSuffix(".wal")
        }.sorted().first!
        let path = dir.path + "/wal/" + segment
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[bytes.count - 60] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: path))
        let verify = try SinkdProcess.run(["wal", "verify", dir.path + "/wal"])
        #expect(verify.status == 1)
        #expect(verify.stdout.contains("TORN TAIL") || verify.stdout.contains("CORRUPT"))
        #expect(verify.stdout.hasSuffix("DAMAGED\n"))
    }

    /// Exit 78: the status systemd/sinkd.service's RestartPreventExitStatus= names, so an
    /// unusable directory is not restarted in a loop.
    @Test func unusableWALDirectoryIsAClearErrorAndExit78() throws {
        let dir = try TemporaryDirectory()
        try dir.write("blocker", "a file where the WAL directory should be")
        let config = try dir.write(
            "sinkd.yaml",
            """
            ingest: {socket: \(dir.path)/ingest.sock}
            control: {socket: \(dir.path)/control.sock}
            wal: {directory: \(dir.path)/blocker/wal}
            sinks: {file: {}}
            """)
        let run = try SinkdProcess.run(["run", "-c", config])
        #expect(run.status == 78)
        #expect(run.stderr.contains("cannot use the write-ahead log directory \(dir.path)/blocker/wal"))
        #expect(run.stderr.contains("Not a directory"))
        #expect(run.stderr.contains("then start sinkd again"), "it says what to do")
    }

    @Test func aSecondSinkdOnTheSameSocketRefusesToStart() throws {
        let dir = try TemporaryDirectory()
        let config = try Self.config(dir)
        let first = try CrashDurabilityTests.Daemon.start(config: config, log: dir.path + "/sinkd.log")
        _ = try first.connect(socket: dir.path + "/ingest.sock")
        defer {
            first.process.terminate()
            first.process.waitUntilExit()
        }
        let other = try dir.write(
            "other.yaml",
            """
            ingest: {socket: \(dir.path)/ingest.sock}
            control: {socket: \(dir.path)/control2.sock}
            wal: {directory: \(dir.path)/wal2}
            sinks: {file: {}}
            """)
        let second = try SinkdProcess.run(["run", "-c", other])
        #expect(second.status == 1)
        #expect(second.stderr.contains("another process is listening on \(dir.path)/ingest.sock"))
    }
}

@Suite(.serialized, .blockingThreads) struct FileSinkEndToEndTests {
    @Test func recordsReachTheOutboxByteForByteAndLeaveTheWAL() throws {
        let dir = try TemporaryDirectory()
        let config = try dir.write(
            "sinkd.yaml",
            """
            ingest: {socket: \(dir.path)/ingest.sock}
            control: {socket: \(dir.path)/control.sock}
            wal: {directory: \(dir.path)/wal, segment_size: 4MiB}
            log: {level: warning}
            sinks: {file: {directory: \(dir.path)/outbox}}
            """)
        let daemon = try CrashDurabilityTests.Daemon.start(config: config, log: dir.path + "/sinkd.log")
        _ = try daemon.connect(socket: dir.path + "/ingest.sock")
        let payloads = (0..<300).map { #"{ "n" : \#($0), "s": "caf\u00e9 é", "f": 1.50e2 }"# }
        let input = payloads.enumerated().map {
            #"{"id":"f-\#($0.offset)","sink":"file:orders","payload":\#($0.element)}"#
        }.joined(separator: "\n")
        let sent = try SinkdProcess.run(["send", "-c", config], stdin: Data(input.utf8))
        #expect(sent.status == 0)
        let outbox = dir.path + "/outbox/orders.ndjson"
        let deadline = Date().addingTimeInterval(20)
        var lines: [String] = []
        while Date() < deadline {
            lines = ((try? String(contentsOfFile: outbox, encoding: .utf8)) ?? "").split(separator: "\n").map(
                String.init)
            if lines.count >= 300 { break }
            usleep(20_000)
        }
        #expect(lines == payloads, "every body, in order, exactly as sent")
        daemon.process.terminate()
        daemon.process.waitUntilExit()
        #expect(daemon.process.terminationStatus == 0)
        let verify = try SinkdProcess.run(["wal", "verify", dir.path + "/wal"])
        #expect(verify.stdout.hasSuffix("0 records: OK\n"), "delivered records left the WAL: \(verify.stdout)")
    }
}
