import Foundation
import SinkdIngest
import SinkdTestSupport

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

nonisolated(unsafe) private var sharedNodeProcessGroup: pid_t = 0

/// The AMQP tests' node: SinkdTestServers' launcher (a private RabbitMQ node on 127.0.0.1) with the
/// pika peer's requests. Starting one takes several seconds, so the tests share one (`shared`) and
/// start their own only to kill it.
typealias RabbitMQServer = RabbitMQProcess

private let sharedNode: Result<RabbitMQProcess, TestServerFailure> = {
    do {
        let node = try RabbitMQProcess()
        // A static is never deinitialized: kill the shared node when the test process exits.
        sharedNodeProcessGroup = node.processIdentifier ?? 0
        atexit { if sharedNodeProcessGroup > 0 { Glibc.kill(-sharedNodeProcessGroup, SIGKILL) } }
        return .success(node)
    } catch let error as TestServerFailure {
        return .failure(error)
    } catch {
        return .failure(TestServerFailure("\(error)"))
    }
}()

extension RabbitMQProcess {
    /// The node the tests share (started by the first caller, off the cooperative pool).
    static func shared() async throws -> RabbitMQProcess {
        try await offThePool { try sharedNode.get() }
    }

    /// A node of the test's own (for tests that kill it).
    static func make() async throws -> RabbitMQProcess {
        try await offThePool { try RabbitMQProcess() }
    }

    /// rabbitmqctl against this node, off the cooperative pool; its standard output.
    @discardableResult
    func ctl(_ arguments: [String]) async throws -> String {
        try await offThePool { try self.control(arguments) }
    }

    func restart() async throws {
        try await offThePool { try self.start() }
    }

    /// The pika peer (Fixtures/amqp_peer.py); its standard output.
    @discardableResult
    func peer(_ arguments: [String]) async throws -> String {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "Fixtures/amqp_peer.py"
        ).path
        return try await offThePool { try Python.run([script, self.url] + arguments) }
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
