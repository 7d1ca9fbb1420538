import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// A private PostgreSQL (Debian's postgresql, installed by scripts/test): initdb into a directory
/// of its own, started on a free 127.0.0.1 port with TLS on (a test CA), a user with a password,
/// run as the `postgres` user when the caller is root (initdb refuses root): the one launcher the
/// Conductor tests and sinkd-bench share. A missing binary is an error: nothing is skipped.
public final class PostgresProcess: @unchecked Sendable {
    public let user: String
    public let password: String
    public let port: Int
    public let directory: String
    public let certificates: TestCertificates
    private let bin: String
    private let ownsDirectory: Bool
    private var process: Process?

    /// initdb and start; in `directory` when given (kept), else in a temporary one (removed with
    /// it). The server accepts TCP connections when this returns; the caller waits for it to
    /// accept logins (a connection of its own) and makes its databases.
    public init(user: String, password: String, directory: String? = nil) throws {
        guard let version = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql"))?.sorted().last
        else {
            throw TestServerFailure(
                "PostgreSQL is not installed (scripts/test installs it: apt-get install postgresql)")
        }
        bin = "/usr/lib/postgresql/\(version)/bin"
        self.user = user
        self.password = password
        port = LoopbackTCP.freePort()
        (self.directory, ownsDirectory) = try ServerProcess.directory(directory, prefix: "sinkd-pg")
        try FileManager.default.createDirectory(atPath: self.directory + "/tls", withIntermediateDirectories: true)
        certificates = try TestCertificates(in: self.directory + "/tls")
        try password.write(toFile: self.directory + "/pwfile", atomically: true, encoding: .utf8)
        try ServerProcess.run("/bin/chmod", ["0600", certificates.keyFile])
        if geteuid() == 0 { try ServerProcess.run("/bin/chown", ["-R", "postgres:postgres", self.directory]) }
        try asPostgres(
            bin + "/initdb",
            [
                "-D", self.directory + "/data", "-U", user, "--pwfile=" + self.directory + "/pwfile",
                "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync",
            ])
        try start()
    }

    deinit {
        kill()
        if ownsDirectory { try? FileManager.default.removeItem(atPath: directory) }
    }

    /// A URL for `database` with this server's user and password.
    public func url(database: String) -> String {
        "postgres://\(user):\(password)@127.0.0.1:\(port)/\(database)"
    }

    /// Makes database `name` (createdb over the server's Unix socket), waiting (at most 30 s) for
    /// the server to accept logins first.
    public func createDatabase(_ name: String) throws {
        let deadline = Date().addingTimeInterval(30)
        while true {
            do {
                try ServerProcess.run(bin + "/createdb", ["-h", directory, "-p", "\(port)", "-U", user, name])
                return
            } catch {
                guard Date() < deadline else { throw error }
                usleep(100_000)
            }
        }
    }

    /// Starts the server (again) and waits (at most 30 s) until its port accepts connections.
    public func start() throws {
        let arguments = [
            bin + "/postgres", "-D", directory + "/data", "-p", "\(port)", "-k", directory,
            "-c", "listen_addresses=127.0.0.1", "-c", "ssl=on", "-c", "timezone=UTC",
            "-c", "ssl_cert_file=\(certificates.certificateFile)", "-c", "ssl_key_file=\(certificates.keyFile)",
        ]
        let p =
            geteuid() == 0
            ? try ServerProcess.launch("/usr/sbin/runuser", ["-u", "postgres", "--"] + arguments)
            : try ServerProcess.launch(arguments[0], Array(arguments.dropFirst()))
        process = p
        Self.running.withLockedValue { _ = $0.insert(directory) }
        try ServerProcess.waitForPort(port, of: p, seconds: 30, "postgres did not start on port \(port)")
    }

    /// A crash as PostgreSQL knows it: SIGQUIT to the postmaster (immediate shutdown: every
    /// backend exits at once, nothing is checkpointed; the next start runs crash recovery).
    public func kill() {
        guard let p = process else { return }
        if let postmaster = Self.postmasterPID(directory) { Glibc.kill(postmaster, SIGQUIT) }
        p.waitUntilExit()
        process = nil
        _ = Self.running.withLockedValue { $0.remove(directory) }
    }

    private static func postmasterPID(_ directory: String) -> pid_t? {
        guard let text = try? String(contentsOfFile: directory + "/data/postmaster.pid", encoding: .utf8),
            let first = text.split(separator: "\n").first
        else { return nil }
        return pid_t(first)
    }

    /// Servers still running when the process exits are stopped then (a test that fails early
    /// never reaches its own cleanup).
    private static let running: NIOLockedValueBox<Set<String>> = {
        atexit {
            for directory in PostgresProcess.running.withLockedValue({ $0 }) {
                if let pid = PostgresProcess.postmasterPID(directory) { Glibc.kill(pid, SIGQUIT) }
            }
        }
        return NIOLockedValueBox([])
    }()

    private func asPostgres(_ executable: String, _ arguments: [String]) throws {
        if geteuid() == 0 {
            try ServerProcess.run("/usr/sbin/runuser", ["-u", "postgres", "--", executable] + arguments)
        } else {
            try ServerProcess.run(executable, arguments)
        }
    }
}
