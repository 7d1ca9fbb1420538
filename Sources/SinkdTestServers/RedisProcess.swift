import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Debian's redis-server on 127.0.0.1: the one launcher the tests and sinkd-bench share. A missing
/// binary is an error (scripts/test installs it): nothing is skipped.
public final class RedisProcess: @unchecked Sendable {
    public let port: Int
    public let directory: String
    /// `appendfsync always` (a test's restart keeps every stored entry), or no persistence at all
    /// (a benchmark's baseline).
    public let persistent: Bool
    public let extraArguments: [String]
    private var process: Process?

    public static let binary = "/usr/bin/redis-server"

    public init(
        directory: String, port: Int = LoopbackTCP.freePort(), persistent: Bool, extraArguments: [String] = []
    ) throws {
        try ServerProcess.require(
            Self.binary, "redis-server is not installed (scripts/test installs it: apt-get install redis-server)")
        self.directory = directory
        self.port = port
        self.persistent = persistent
        self.extraArguments = extraArguments
    }

    deinit { stop() }

    /// Starts it and waits (at most 10 s) until it accepts connections.
    public func start() throws {
        let persistence = persistent ? ["--appendonly", "yes", "--appendfsync", "always"] : ["--appendonly", "no"]
        let p = try ServerProcess.launch(
            Self.binary,
            ["--port", "\(port)", "--bind", "127.0.0.1", "--save", ""] + persistence
                + ["--dir", directory, "--daemonize", "no", "--logfile", directory + "/redis.log"] + extraArguments)
        process = p
        try ServerProcess.waitForPort(
            port, of: p, seconds: 10, "redis-server did not start on port \(port) (its log: \(directory)/redis.log)")
    }

    /// Stops it from running (SIGSTOP): it holds its connections and reads nothing until `resume`.
    public func pause() {
        if let p = process { Glibc.kill(p.processIdentifier, SIGSTOP) }
    }

    public func resume() {
        if let p = process { Glibc.kill(p.processIdentifier, SIGCONT) }
    }

    /// Kills it (SIGKILL) and waits until it is gone.
    public func stop() {
        guard let p = process else { return }
        ServerProcess.kill(p)
        process = nil
    }
}
