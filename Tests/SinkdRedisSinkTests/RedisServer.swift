import Foundation
import SinkdIngest
import NIOPosix
@testable import SinkdRedisSink

#if canImport(Glibc)
import Glibc
#endif

/// A real redis-server on 127.0.0.1, started by the test on a free port (Debian's redis-server,
/// installed by scripts/test). A missing binary fails the test: nothing is skipped.
final class RedisServer: @unchecked Sendable {
    let port: Int
    let directory: String
    let extraArguments: [String]
    private var process: Process?

    struct Missing: Error, CustomStringConvertible {
        var description = "redis-server is not installed (scripts/test installs it: apt-get install redis-server)"
    }

    init(arguments: [String] = []) throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/redis-server") else { throw Missing() }
        port = Self.freePort()
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-redis-\(UUID().uuidString.prefix(8))")
            .path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        extraArguments = arguments
        try start()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        p.arguments =
            [
                "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync",
                "always",
                "--dir", directory, "--daemonize", "no", "--logfile", directory + "/redis.log",
            ] + extraArguments
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if Self.canConnect(port) { return }
            usleep(20_000)
        }
        throw Missing(description: "redis-server did not start on port \(port)")
    }

    func stop() {
        guard let p = process else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        process = nil
    }

    var url: String { "redis://127.0.0.1:\(port)/0" }

    /// A plain connection for the test's own commands (XRANGE, XLEN, SET, ...).
    func command(_ parts: [String], password: String? = nil) async throws -> RESPValue {
        let c = try await RedisConnection.connect(
            host: "127.0.0.1", port: port, group: MultiThreadedEventLoopGroup.singleton, timeout: .seconds(5),
            replyTimeout: .seconds(30), limits: .protocolMaximum)
        defer { Task { await c.close() } }
        if let password { _ = try await c.send([[Array("AUTH".utf8), Array(password.utf8)]]) }
        return try await c.send([parts.map { Array($0.utf8) }])[0]
    }

    static func canConnect(_ port: Int) -> Bool { LoopbackTCP.canConnect(port: port) }

    static func freePort() -> Int { LoopbackTCP.freePort() }
}
