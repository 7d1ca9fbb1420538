import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// moto's server mode (PyPI moto[server], installed by scripts/test): an SQS-compatible server on
/// a free 127.0.0.1 port. It does not check signatures (SigV4Tests does, against botocore). The
/// one launcher the SQS tests and sinkd-bench share. A missing server is an error: nothing is
/// skipped.
public final class MotoProcess: @unchecked Sendable {
    public let port: Int
    public let environment: [String: String]
    private var process: Process?

    public var endpoint: String { "http://127.0.0.1:\(port)" }

    /// Starts it with `environment` added to ours (INITIAL_NO_AUTH_ACTION_COUNT=0 turns its
    /// authentication on) and waits (at most 30 s) until it accepts connections.
    public init(port: Int? = nil, environment: [String: String] = [:]) throws {
        self.port = port ?? LoopbackTCP.freePort()
        self.environment = environment
        try start()
    }

    deinit { stop() }

    /// Kills it (its whole process group: pyenv's shim may run the server as a child of its
    /// own); the port is free again when this returns.
    public func stop() {
        guard let p = process else { return }
        ServerProcess.kill(p, group: true)
        process = nil
        ServerProcess.waitForClosedPort(port)
    }

    public func restart() throws {
        stop()
        try start()
    }

    private func start() throws {
        // Foundation starts the child in a process group of its own (checked below), so stop()
        // reaches the server through whatever wraps it.
        let p = try ServerProcess.launch(
            "/usr/bin/env", ["moto_server", "-H", "127.0.0.1", "-p", "\(port)"],
            environment: environment.isEmpty
                ? nil : ProcessInfo.processInfo.environment.merging(environment) { $1 })
        process = p
        guard getpgid(p.processIdentifier) == p.processIdentifier else {
            stop()
            throw TestServerFailure("moto_server is not in a process group of its own; stop() could not reach it")
        }
        try ServerProcess.waitForPort(
            port, of: p, seconds: 30,
            "moto_server did not start on port \(port) (is moto[server] installed? scripts/test installs it)")
    }
}
