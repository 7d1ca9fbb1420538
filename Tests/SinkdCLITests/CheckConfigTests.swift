import Foundation
import Testing
import SinkdTestSupport

@Suite(.blockingThreads) struct CheckConfigTests {
    @Test func validFilePrintsSummaryAndExitsZero() throws {
        let dir = try TemporaryDirectory()
        let path = try dir.write(
            "sinkd.yaml",
            """
            wal: {directory: /data/wal, fsync: interval, fsync_interval: 50ms}
            sinks:
              file: {directory: /out}
              amqp: {urls: ["amqp://sinkd:${env:PW}@rabbit:5672/%2f"]}
            """)
        let result = try SinkdProcess.run(["check-config", "--config", path], environment: ["PW": "hunter2"])
        #expect(result.status == 0)
        #expect(result.stderr == "")
        #expect(result.stdout.hasPrefix("\(path): OK\n"))
        #expect(
            result.stdout.contains(
                "wal           /data/wal (segments 64MiB, max 10GiB, fsync every 50ms, when full: block)"))
        #expect(result.stdout.contains("amqp        amqp://sinkd:(set)@rabbit:5672/%2f"))
        #expect(result.stdout.contains("file        → /out/NAME.ndjson"))
        #expect(!result.stdout.contains("hunter2"))
        #expect(result.stdout.split(separator: "\n").count <= 24, "fits on one screen")
    }

    @Test func invalidFilePrintsEveryErrorAndExitsOne() throws {
        let dir = try TemporaryDirectory()
        let path = try dir.write("bad.yaml", "wal:\n  fsync: sometimes\ndelivery:\n  retry:\n    max_backoff: thirty\n")
        let result = try SinkdProcess.run(["check-config", "-c", path])
        #expect(result.status == 1)
        #expect(result.stdout == "")
        #expect(
            result.stderr == """
                \(path):2:10: wal.fsync: expected one of always, interval, never, got "sometimes"
                \(path):5:18: delivery.retry.max_backoff: expected a duration like "30s", got "thirty"
                2 errors in \(path)

                """)
    }

    @Test func configPathComesFromEnvironment() throws {
        let dir = try TemporaryDirectory()
        let path = try dir.write("env.yaml", "sinks: {file: {}}\n")
        let result = try SinkdProcess.run(["check-config"], environment: ["SINKD_CONFIG": path])
        #expect(result.status == 0)
        #expect(result.stdout.hasPrefix("\(path): OK"))
    }

    @Test func missingFileExitsOne() throws {
        let result = try SinkdProcess.run(["check-config", "--config", "/nonexistent/sinkd.yaml"])
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("/nonexistent/sinkd.yaml: the configuration file does not exist"))
    }

    @Test func versionAndHelp() throws {
        let version = try SinkdProcess.run(["version"])
        #expect(version.status == 0)
        #expect(version.stdout.hasPrefix("sinkd "))
        #expect(version.stdout.contains("config schema v1"))
        let help = try SinkdProcess.run(["--help"])
        #expect(help.status == 0)
        for subcommand in ["run", "check-config", "version"] {
            #expect(help.stdout.contains("  \(subcommand) "), "help lists \(subcommand)")
        }
        let unknown = try SinkdProcess.run(["frobnicate"])
        #expect(unknown.status == 64)
    }
}
