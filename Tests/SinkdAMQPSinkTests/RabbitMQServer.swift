import Foundation
import SinkdIngest
import SinkdTestSupport

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

nonisolated(unsafe) private var sharedNodeProcessGroup: pid_t = 0

/// A private RabbitMQ node (Debian's rabbitmq-server, installed by scripts/test) on a free
/// 127.0.0.1 port, with its own data directory, Erlang cookie and node name. Starting one takes
/// several seconds, so the tests share one (`shared`) and start their own only to kill it.
/// A missing binary fails the test: nothing is skipped.
final class RabbitMQServer: @unchecked Sendable {
    static let bin = "/usr/lib/rabbitmq/bin"
    let port: Int
    /// The TLS listener (amqps), with `certificates` (a test CA and a certificate for 127.0.0.1).
    let tlsPort: Int
    let certificates: TestCertificates
    let directory: String
    let node: String
    private var process: Process?

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    private static let sharedNode: Result<RabbitMQServer, Failure> = {
        do {
            let node = try RabbitMQServer()
            // A static is never deinitialized: kill the shared node when the test process exits.
            sharedNodeProcessGroup = node.process?.processIdentifier ?? 0
            atexit { if sharedNodeProcessGroup > 0 { Glibc.kill(-sharedNodeProcessGroup, SIGKILL) } }
            return .success(node)
        } catch let error as Failure {
            return .failure(error)
        } catch {
            return .failure(Failure(description: "\(error)"))
        }
    }()

    /// The node the tests share (started by the first caller, off the cooperative pool).
    static func shared() async throws -> RabbitMQServer {
        try await offThePool { try sharedNode.get() }
    }

    /// A node of the test's own (for tests that kill it).
    static func make() async throws -> RabbitMQServer {
        try await offThePool { try RabbitMQServer() }
    }

    init() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.bin + "/rabbitmq-server") else {
            throw Failure(
                description:
                    "rabbitmq-server is not installed (scripts/test installs it: apt-get install rabbitmq-server)")
        }
        port = LoopbackTCP.freePort()
        node = "sinkd\(port)@localhost"
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent(
                "sinkd-rabbitmq-\(UUID().uuidString.prefix(8))"
            ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try "[].".write(toFile: directory + "/enabled_plugins", atomically: true, encoding: .utf8)
        tlsPort = LoopbackTCP.freePort()
        try FileManager.default.createDirectory(atPath: directory + "/tls", withIntermediateDirectories: true)
        certificates = try TestCertificates(in: directory + "/tls")
        try """
        listeners.tcp.default = 127.0.0.1:\(port)
        listeners.ssl.default = 127.0.0.1:\(tlsPort)
        ssl_options.cacertfile = \(certificates.caFile)
        ssl_options.certfile = \(certificates.certificateFile)
        ssl_options.keyfile = \(certificates.keyFile)
        ssl_options.verify = verify_none
        ssl_options.fail_if_no_peer_cert = false
        loopback_users = none
        """.write(toFile: directory + "/rabbitmq.conf", atomically: true, encoding: .utf8)
        try start()
    }

    deinit {
        kill()
        try? FileManager.default.removeItem(atPath: directory)
    }

    var url: String { "amqp://guest:guest@127.0.0.1:\(port)/%2f" }

    var environment: [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["HOME"] = directory
        env["RABBITMQ_NODENAME"] = node
        env["RABBITMQ_NODE_PORT"] = "\(port)"
        env["RABBITMQ_DIST_PORT"] = "\(LoopbackTCP.freePort())"
        env["RABBITMQ_MNESIA_BASE"] = directory + "/mnesia"
        env["RABBITMQ_LOG_BASE"] = directory + "/log"
        env["RABBITMQ_CONFIG_FILE"] = directory + "/rabbitmq"
        env["RABBITMQ_ENABLED_PLUGINS_FILE"] = directory + "/enabled_plugins"
        return env
    }

    func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.bin + "/rabbitmq-server")
        p.environment = environment
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, p.isRunning {
            if LoopbackTCP.canConnect(port: port),
                (try? run(Self.bin + "/rabbitmqctl", ["-n", node, "await_startup", "--timeout", "30"])) != nil
            {
                return
            }
            usleep(200_000)
        }
        throw Failure(description: "rabbitmq-server did not start on port \(port) (logs in \(directory)/log)")
    }

    /// Kills the node (SIGKILL to the Erlang VM and its children: a crash, not a shutdown).
    func kill() {
        guard let p = process else { return }
        Glibc.kill(-p.processIdentifier, SIGKILL)
        Glibc.kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        // The VM is a child of the start script: find it by its node name.
        let pkill = Process()
        pkill.executableURL = URL(fileURLWithPath: "/usr/bin/pkill")
        pkill.arguments = ["-KILL", "-f", "-sname \(node)|-name \(node)|\(node)"]
        try? pkill.run()
        pkill.waitUntilExit()
        let deadline = Date().addingTimeInterval(10)
        while LoopbackTCP.canConnect(port: port), Date() < deadline { usleep(50_000) }
        process = nil
    }

    /// rabbitmqctl against this node; its standard output.
    @discardableResult
    func ctl(_ arguments: [String]) async throws -> String {
        try await offThePool { try self.run(Self.bin + "/rabbitmqctl", ["-n", self.node] + arguments) }
    }

    /// The pika peer (Fixtures/amqp_peer.py); its standard output.
    @discardableResult
    func peer(_ arguments: [String]) async throws -> String {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "Fixtures/amqp_peer.py"
        ).path
        return try await offThePool { try self.run("/usr/bin/env", ["python3", script, self.url] + arguments) }
    }

    func restart() async throws {
        try await offThePool { try self.start() }
    }

    private func run(_ executable: String, _ arguments: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        p.environment = environment
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw Failure(
                description: "\(executable) \(arguments.joined(separator: " ")) failed: \(errors.suffix(500))")
        }
        return output
    }

    /// Messages ready in `queue` (-1: no such queue).
    func count(_ queue: String) async throws -> Int {
        Int(try await peer(["count", queue]).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    /// Waits until `queue` holds at least `count` messages; what it holds.
    func waitForCount(_ queue: String, _ expected: Int, timeout: Duration = .seconds(30)) async throws -> Int {
        let deadline = ContinuousClock.now + timeout
        var n = (try? await count(queue)) ?? -1
        while n < expected, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            n = (try? await count(queue)) ?? -1
        }
        return n
    }

    /// Takes up to `max` messages off `queue`, with their properties.
    func get(_ queue: String, max: Int) async throws -> [[String: Any]] {
        try await peer(["get", queue, "\(max)"]).split(separator: "\n").compactMap {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }
}
