import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A private RabbitMQ node (Debian's rabbitmq-server, installed by scripts/test) on a free
/// 127.0.0.1 port, with its own data directory, Erlang cookie and node name, and a TLS listener
/// with a test CA: the one launcher the AMQP tests and sinkd-bench share. A missing binary is an
/// error: nothing is skipped.
public final class RabbitMQProcess: @unchecked Sendable {
    public static let bin = "/usr/lib/rabbitmq/bin"
    public let port: Int
    /// The TLS listener (amqps), with `certificates` (a test CA and a certificate for 127.0.0.1).
    public let tlsPort: Int
    public let certificates: TestCertificates
    public let directory: String
    public let node: String
    /// Erlang distribution's port: a fresh one at each start (the last may still be in TIME_WAIT).
    private var distributionPort = 0
    private let ownsDirectory: Bool
    private var process: Process?

    /// Starts a node and waits (at most 60 s) until it has booted; in `directory` when given
    /// (kept), else in a temporary one (removed with it).
    public init(directory: String? = nil) throws {
        try ServerProcess.require(
            Self.bin + "/rabbitmq-server",
            "rabbitmq-server is not installed (scripts/test installs it: apt-get install rabbitmq-server)")
        port = LoopbackTCP.freePort()
        tlsPort = LoopbackTCP.freePort()
        node = "sinkd\(port)@localhost"
        (self.directory, ownsDirectory) = try ServerProcess.directory(directory, prefix: "sinkd-rabbitmq")
        try "[].".write(toFile: self.directory + "/enabled_plugins", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: self.directory + "/tls", withIntermediateDirectories: true)
        certificates = try TestCertificates(in: self.directory + "/tls")
        try """
        listeners.tcp.default = 127.0.0.1:\(port)
        listeners.ssl.default = 127.0.0.1:\(tlsPort)
        ssl_options.cacertfile = \(certificates.caFile)
        ssl_options.certfile = \(certificates.certificateFile)
        ssl_options.keyfile = \(certificates.keyFile)
        ssl_options.verify = verify_none
        ssl_options.fail_if_no_peer_cert = false
        loopback_users = none
        """.write(toFile: self.directory + "/rabbitmq.conf", atomically: true, encoding: .utf8)
        try start()
    }

    deinit {
        kill()
        if ownsDirectory { try? FileManager.default.removeItem(atPath: directory) }
    }

    public var url: String { "amqp://guest:guest@127.0.0.1:\(port)/%2f" }

    /// The start script's process id while it runs (its process group holds the Erlang VM).
    public var processIdentifier: pid_t? { process?.processIdentifier }

    public var environment: [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["HOME"] = directory
        env["RABBITMQ_NODENAME"] = node
        env["RABBITMQ_NODE_PORT"] = "\(port)"
        env["RABBITMQ_DIST_PORT"] = "\(distributionPort)"
        env["RABBITMQ_MNESIA_BASE"] = directory + "/mnesia"
        env["RABBITMQ_LOG_BASE"] = directory + "/log"
        env["RABBITMQ_CONFIG_FILE"] = directory + "/rabbitmq"
        env["RABBITMQ_ENABLED_PLUGINS_FILE"] = directory + "/enabled_plugins"
        return env
    }

    /// Starts the node (again) and waits (at most 60 s) until `rabbitmqctl await_startup` says
    /// it has booted.
    public func start() throws {
        distributionPort = LoopbackTCP.freePort()
        let p = try ServerProcess.launch(Self.bin + "/rabbitmq-server", [], environment: environment)
        process = p
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, p.isRunning {
            if LoopbackTCP.canConnect(port: port), (try? control(["await_startup", "--timeout", "30"])) != nil {
                return
            }
            usleep(200_000)
        }
        throw TestServerFailure("rabbitmq-server did not start on port \(port) (logs in \(directory)/log)")
    }

    /// Kills the node (SIGKILL to the Erlang VM and its children: a crash, not a shutdown).
    public func kill() {
        guard let p = process else { return }
        ServerProcess.kill(p, group: true)
        // The VM is a child of the start script: find it by its node name.
        _ = try? ServerProcess.run("/usr/bin/pkill", ["-KILL", "-f", "-sname \(node)|-name \(node)|\(node)"])
        ServerProcess.waitForClosedPort(port)
        process = nil
    }

    /// rabbitmqctl against this node; its standard output.
    @discardableResult
    public func control(_ arguments: [String]) throws -> String {
        try ServerProcess.run(Self.bin + "/rabbitmqctl", ["-n", node] + arguments, environment: environment)
    }
}
