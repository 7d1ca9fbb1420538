import Foundation
@testable import SinkdControl
import SinkdIngest
import SinkdTestSupport
import Testing
@testable import SinkdCLI

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

/// `sinkd top` in a real terminal (tmux) against a running daemon with a failing and a healthy sink.
@Suite(.serialized, .blockingThreads) struct TopInTmuxTests {
    let tmux = "/usr/bin/tmux"

    struct Session {
        let tmux: String
        let server: String
        func run(_ arguments: [String]) throws -> SinkdProcess.Output {
            try SinkdProcess.runTool(tmux, ["-L", server] + arguments)
        }
        func screen() throws -> String { try run(["capture-pane", "-p", "-t", "top"]).stdout }
        func type(_ keys: String...) throws { _ = try run(["send-keys", "-t", "top"] + keys) }
        /// Waits for the screen to satisfy `condition` (10 s), returning the last screen seen.
        @discardableResult
        func wait(_ what: String, _ condition: (String) -> Bool) throws -> String {
            let deadline = Date().addingTimeInterval(10)
            var last = ""
            while Date() < deadline {
                last = try screen()
                if condition(last) { return last }
                usleep(100_000)
            }
            Issue.record("\(what): not within 10 s; the screen:\n\(last)")
            return last
        }
    }

    /// Runs `argv` with /dev/null as its standard streams and waits for it: its wait status.
    static func spawnAndWait(_ argv: [String]) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd: Int32 in [0, 1, 2] {
            posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
        }
        var pid: pid_t = 0
        var cargs = argv.map { strdup($0) } + [nil]
        defer { for arg in cargs { free(arg) } }
        let rc = posix_spawn(&pid, argv[0], &actions, nil, &cargs, environ)
        guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        return status
    }

    func withDaemonAndTerminal(_ body: (Session, String) throws -> Void) throws {
        try #require(
            FileManager.default.isExecutableFile(atPath: tmux),
            "tmux missing: apt-get install tmux (scripts/test installs it)")
        let dir = try TemporaryDirectory()
        let config = try dir.write(
            "sinkd.yaml",
            """
            ingest: {socket: \(dir.path)/ingest.sock}
            control: {socket: \(dir.path)/control.sock}
            wal: {directory: \(dir.path)/wal}
            log: {level: warning}
            delivery: {retry: {initial_backoff: 10ms, max_backoff: 100ms}}
            sinks:
              file: {directory: \(dir.path)/outbox}
              http: {endpoints: {closed: {url: "http://127.0.0.1:\(LoopbackTCP.freePort())/"}}}
            """)
        let daemon = try CrashDurabilityTests.Daemon.start(config: config, log: dir.path + "/sinkd.log")
        defer { daemon.stopIfRunning() }
        _ = try daemon.connect(socket: dir.path + "/ingest.sock")
        let input = (0..<5).flatMap {
            [
                #"{"id":"h\#($0)","sink":"file:healthy","payload":1}"#,
                #"{"id":"f\#($0)","sink":"http:closed","payload":1}"#,
            ]
        }
        _ = try SinkdProcess.run(["send", "-c", config], stdin: Data(input.joined(separator: "\n").utf8))
        let session = Session(tmux: tmux, server: "sinkd-top-\(getpid())-\(UUID().uuidString.prefix(8))")
        defer { _ = try? session.run(["kill-server"]) }
        // posix_spawn and waitpid, not Foundation's Process: the tmux client forks the server and
        // exits, and Process.waitUntilExit was seen never to return for it (the client left a zombie).
        let status = try Self.spawnAndWait([
            tmux, "-L", session.server, "new-session", "-d", "-s", "top", "-x", "100", "-y", "24",
            "bash --norc --noprofile",
        ])
        try #require(status == 0, "tmux new-session exited with status \(status)")
        try session.type("PS1='$ '; echo BEFORE-TOP", "Enter")
        try session.type(
            "\(SinkdProcess.executable.path) top -c \(config); echo EXIT=$?; echo MODES: $(stty -a | tr ' ;' '\\n\\n' | grep -E '^-?(icanon|echo|isig)$')",
            "Enter")
        try body(session, config)
    }

    /// The screen while it runs; the columns at 100 and at 46 characters; q leaves and restores.
    @Test func showsBothSinksFitsANarrowTerminalAndQRestoresIt() throws {
        try withDaemonAndTerminal { session, _ in
            let screen = try session.wait("both sinks, the failing one down and first") { s in
                let lines = s.split(separator: "\n").map(String.init)
                guard let closed = lines.firstIndex(where: { $0.hasPrefix("http:closed") }),
                    let healthy = lines.firstIndex(where: { $0.hasPrefix("file:healthy") })
                else { return false }
                return lines[closed].contains("down") && closed < healthy && lines[healthy].contains("idle")
                    || lines[healthy].contains("up")
            }
            #expect(screen.contains("SINK") && screen.contains("LAST ERROR") && screen.contains("q: quit"), "\(screen)")
            #expect(!screen.contains("BEFORE-TOP"), "the alternate screen hides the shell while top runs")
            _ = try session.run(["resize-window", "-t", "top", "-x", "46"])
            let narrow = try session.wait("redrawn for 46 columns") { s in
                s.contains("http:closed") && !s.contains("LAST ERROR") && !s.contains("DEAD/S")
            }
            for line in narrow.split(separator: "\n") { #expect(line.count <= 46, "\(line)") }
            try session.type("q")
            let after = try session.wait("top left with q") {
                $0.contains("EXIT=0") && $0.split(separator: "\n").contains { $0.hasPrefix("MODES:") }
            }
            #expect(
                !after.contains("q: quit") && !after.contains("LAST ERROR"), "the alternate screen is gone: \(after)")
            #expect(after.contains("MODES: isig icanon echo"), "the terminal modes are restored: \(after)")
        }
    }

    @Test func ctrlCLeavesAndRestoresTheTerminal() throws {
        try withDaemonAndTerminal { session, _ in
            try session.wait("running") { $0.contains("http:closed") && $0.contains("q: quit") }
            try session.type("C-c")
            let after = try session.wait("top left with Ctrl-C") {
                $0.contains("EXIT=0") && $0.split(separator: "\n").contains { $0.hasPrefix("MODES:") }
            }
            #expect(
                after.contains("BEFORE-TOP") && !after.contains("q: quit") && after.contains("MODES: isig icanon echo"),
                "\(after)")
        }
    }

    /// SIGTERM (a closed ssh session's hangup is the same path) restores the terminal too.
    @Test func sigtermLeavesAndRestoresTheTerminal() throws {
        try withDaemonAndTerminal { session, config in
            try session.wait("running") { $0.contains("http:closed") && $0.contains("q: quit") }
            let pids = try SinkdProcess.runTool("/usr/bin/pgrep", ["-f", "sinkd top -c \(config)"]).stdout.split(
                separator: "\n"
            ).compactMap { Int32($0) }
            try #require(pids.count == 1, "pgrep: \(pids)")
            kill(pids[0], SIGTERM)
            let after = try session.wait("top left on SIGTERM") {
                $0.contains("EXIT=0") && $0.split(separator: "\n").contains { $0.hasPrefix("MODES:") }
            }
            #expect(
                after.contains("BEFORE-TOP") && !after.contains("q: quit") && after.contains("MODES: isig icanon echo"),
                "\(after)")
        }
    }

    /// Without a terminal: plain blocks of lines, no escape sequences, --count refreshes.
    @Test func aPipeGetsPlainLines() throws {
        try withDaemonAndTerminal { _, config in
            let out = try SinkdProcess.run(["top", "-c", config, "--count", "2", "--interval", "0.2"])
            #expect(out.status == 0, "\(out.stderr)")
            #expect(!out.stdout.contains("\u{1B}"), "no escape sequences in a pipe")
            #expect(out.stdout.components(separatedBy: "--- ").count - 1 == 2, "\(out.stdout)")
            #expect(out.stdout.contains("http:closed") && out.stdout.contains("file:healthy"), "\(out.stdout)")
            let unreachable = try SinkdProcess.run(["top", "--config", config + ".missing"])
            #expect(unreachable.status != 0)
        }
    }
}
