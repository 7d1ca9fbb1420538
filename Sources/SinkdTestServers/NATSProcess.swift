import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Debian's nats-server on a free 127.0.0.1 port, with JetStream and its store in a directory of
/// its own: the one launcher the NATS tests and sinkd-bench share. A missing binary is an error
/// (scripts/test installs it): nothing is skipped.
public final class NATSProcess: @unchecked Sendable {
    public static let binary = "/usr/sbin/nats-server"
    public let port: Int
    public let directory: String
    /// Extra lines of the server's configuration file (authorization, max_payload, tls).
    public let extraConfig: String
    /// Operator-mode servers without a system account cannot run JetStream: `jetStream: false`.
    public let jetStream: Bool
    private let ownsDirectory: Bool
    public private(set) var process: Process?

    /// Starts a server; in `directory` when given (kept), else in a temporary one (removed with it).
    public init(config: String = "", jetStream: Bool = true, directory: String? = nil) throws {
        try ServerProcess.require(
            Self.binary, "nats-server is not installed (scripts/test installs it: apt-get install nats-server)")
        self.jetStream = jetStream
        port = LoopbackTCP.freePort()
        (self.directory, ownsDirectory) = try ServerProcess.directory(directory, prefix: "sinkd-nats")
        extraConfig = config
        try start()
    }

    deinit {
        kill()
        if ownsDirectory { try? FileManager.default.removeItem(atPath: directory) }
    }

    public var url: String { "nats://127.0.0.1:\(port)" }

    /// Starts it (again) and waits (at most 10 s) until it accepts connections.
    public func start() throws {
        let conf = """
            listen: 127.0.0.1:\(port)
            \(jetStream ? "jetstream { store_dir: \"\(directory)/js\" }" : "")
            lame_duck_grace_period: 1s
            lame_duck_duration: 30s
            \(extraConfig)
            """
        try conf.write(toFile: directory + "/nats.conf", atomically: true, encoding: .utf8)
        let p = try ServerProcess.launch(Self.binary, ["-c", directory + "/nats.conf"], log: directory + "/nats.log")
        process = p
        try ServerProcess.waitForPort(
            port, of: p, seconds: 10,
            "nats-server did not start on port \(port): \((try? String(contentsOfFile: directory + "/nats.log", encoding: .utf8)) ?? "")"
        )
    }

    /// Kills it (SIGKILL: a crash, not a shutdown).
    public func kill() {
        guard let p = process else { return }
        ServerProcess.kill(p)
        process = nil
    }

    /// Lame-duck mode (SIGUSR2, as `nats-server --signal ldm` sends).
    public func enterLameDuckMode() {
        guard let p = process else { return }
        Glibc.kill(p.processIdentifier, SIGUSR2)
    }
}
