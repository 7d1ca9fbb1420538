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

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public static let binary = "/usr/bin/redis-server"

    public init(
        directory: String, port: Int = LoopbackTCP.freePort(), persistent: Bool, extraArguments: [String] = []
    ) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            throw Failure(
                description: "redis-server is not installed (scripts/test installs it: apt-get install redis-server)")
        }
        self.directory = directory
        self.port = port
        self.persistent = persistent
        self.extraArguments = extraArguments
    }

    deinit { stop() }

    /// Starts it and waits (at most 10 s) until it accepts connections.
    public func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        let persistence = persistent ? ["--appendonly", "yes", "--appendfsync", "always"] : ["--appendonly", "no"]
        p.arguments =
            ["--port", "\(port)", "--bind", "127.0.0.1", "--save", ""] + persistence
            + ["--dir", directory, "--daemonize", "no", "--logfile", directory + "/redis.log"] + extraArguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if LoopbackTCP.canConnect(port: port) { return }
            usleep(20_000)
        }
        throw Failure(description: "redis-server did not start on port \(port) (its log: \(directory)/redis.log)")
    }

    /// SIGKILL (children of a test process inherit a blocked SIGTERM) and wait.
    public func stop() {
        guard let p = process else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        process = nil
    }
}
