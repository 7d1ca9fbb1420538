import Foundation
import SinkdIngest
import NIOPosix
@testable import SinkdRedisSink

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

/// A real redis-server on 127.0.0.1, started by the test on a free port (Debian's redis-server,
/// installed by scripts/test). A missing binary fails the test: nothing is skipped.
final class RedisServer: @unchecked Sendable {
    let directory: String
    private let process: RedisProcess
    var port: Int { process.port }

    init(arguments: [String] = []) throws {
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-redis-\(UUID().uuidString.prefix(8))")
            .path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        process = try RedisProcess(directory: directory, persistent: true, extraArguments: arguments)
        try start()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    func start() throws { try process.start() }

    func stop() { process.stop() }

    func pause() { process.pause() }

    func resume() { process.resume() }

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
