import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A test server that could not be started or driven: what happened and, when it is missing,
/// what installs it (scripts/test installs every one). Nothing is skipped: the caller fails.
public struct TestServerFailure: Error, CustomStringConvertible {
    public var description: String

    public init(_ description: String) { self.description = description }
}

/// The steps every launcher in this target shares: check the binary, start it with its output in
/// a log, wait for its port, kill and reap it, run a tool to its end.
public enum ServerProcess {
    /// Throws `hint` when `path` is not an executable file.
    static func require(_ path: String, _ hint: String) throws {
        guard FileManager.default.isExecutableFile(atPath: path) else { throw TestServerFailure(hint) }
    }

    /// A server's directory: `given`, made if missing and kept (`owned` false), or a fresh one
    /// under the temporary directory named `prefix-XXXXXXXX` (`owned`: its server removes it).
    static func directory(_ given: String?, prefix: String) throws -> (path: String, owned: Bool) {
        let path =
            given
            ?? FileManager.default.temporaryDirectory.appendingPathComponent(
                "\(prefix)-\(UUID().uuidString.prefix(8))"
            ).path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return (path, given == nil)
    }

    /// Starts `executable arguments` with its standard input from /dev/null and its output
    /// appended to `log` (or discarded).
    public static func launch(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, log: String? = nil
    ) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        if let environment { p.environment = environment }
        p.standardInput = FileHandle.nullDevice
        if let log {
            if !FileManager.default.fileExists(atPath: log) {
                _ = FileManager.default.createFile(atPath: log, contents: nil)
            }
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            handle.seekToEndOfFile()
            p.standardOutput = handle
            p.standardError = handle
        } else {
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
        }
        try p.run()
        return p
    }

    /// Waits (at most `seconds`) until 127.0.0.1:`port` accepts connections while `process`
    /// runs; throws `failure` otherwise.
    public static func waitForPort(
        _ port: Int, of process: Process, seconds: Double, _ failure: @autoclosure () -> String
    ) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while !LoopbackTCP.canConnect(port: port) {
            guard process.isRunning, Date() < deadline else { throw TestServerFailure(failure()) }
            usleep(20_000)
        }
    }

    /// Waits (at most `seconds`) until nothing accepts connections on 127.0.0.1:`port`.
    public static func waitForClosedPort(_ port: Int, seconds: Double = 10) {
        let deadline = Date().addingTimeInterval(seconds)
        while LoopbackTCP.canConnect(port: port), Date() < deadline { usleep(10_000) }
    }

    /// SIGKILL (to its process group too with `group`: a wrapper's children), then reaped with
    /// waitpid for at most 5 s (Foundation's waitUntilExit can hang on a test's thread). SIGKILL,
    /// not SIGTERM: children of a test process inherit a blocked SIGTERM, and a test server's
    /// state never matters after its test.
    public static func kill(_ p: Process, group: Bool = false) {
        guard p.isRunning else { return }
        let pid = p.processIdentifier
        if group { Glibc.kill(-pid, SIGKILL) }
        Glibc.kill(pid, SIGKILL)
        var status: Int32 = 0
        for _ in 0..<500 {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid || (r == -1 && errno == ECHILD) || !p.isRunning { return }
            usleep(10_000)
        }
    }

    /// Runs `executable arguments` to its end: its standard output, or a failure carrying the
    /// end of its standard error.
    @discardableResult
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil
    ) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        if let environment { p.environment = environment }
        p.standardInput = FileHandle.nullDevice
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // Both pipes read to the end before waiting: a chatty tool never blocks on a full pipe.
        let errors = ReadToEnd(err.fileHandleForReading)
        let output = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let stderr = String(decoding: errors.wait(), as: UTF8.self)
        guard p.terminationStatus == 0 else {
            // A script given inline (python3 -c) is shown by its first line only.
            let command = ([executable] + arguments).map { $0.split(separator: "\n").first.map(String.init) ?? $0 }
            throw TestServerFailure(
                "\(command.joined(separator: " ")) failed (exit \(p.terminationStatus)): \(stderr.suffix(500))")
        }
        return String(decoding: output, as: UTF8.self)
    }
}
