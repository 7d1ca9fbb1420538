import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOPosix
import PostgresNIO
import SinkdIngest
import SinkdTestSupport

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

/// A private PostgreSQL (Debian's postgresql, installed by scripts/test): initdb into a temporary
/// directory, started on a free 127.0.0.1 port, TLS on with a test CA, user `conductor` with a
/// password, database `conductor`. Run as the `postgres` user when the tests run as root
/// (initdb refuses root). A missing binary fails the test: nothing is skipped.
final class PostgresServer: @unchecked Sendable {
    static let user = "conductor"
    static let password = "s3cret"
    let port: Int
    let directory: String
    let certificates: TestCertificates
    private var process: Process?
    private let bin: String

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func make() async throws -> PostgresServer {
        let server = try await offThePool { try PostgresServer() }
        try await server.waitUntilReady()
        _ = try await server.admin("postgres") { try await $0.query("CREATE DATABASE conductor", logger: Self.logger) }
        return server
    }

    private init() throws {
        guard let version = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql"))?.sorted().last
        else {
            throw Failure(
                description: "PostgreSQL is not installed (scripts/test installs it: apt-get install postgresql)")
        }
        bin = "/usr/lib/postgresql/\(version)/bin"
        port = LoopbackTCP.freePort()
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-pg-\(UUID().uuidString.prefix(8))")
            .path
        try FileManager.default.createDirectory(atPath: directory + "/tls", withIntermediateDirectories: true)
        certificates = try TestCertificates(in: directory + "/tls")
        try Self.password.write(toFile: directory + "/pwfile", atomically: true, encoding: .utf8)
        try run("/bin/chmod", ["0600", certificates.keyFile])
        if geteuid() == 0 { try run("/bin/chown", ["-R", "postgres:postgres", directory]) }
        try asPostgres(
            bin + "/initdb",
            [
                "-D", directory + "/data", "-U", Self.user, "--pwfile=" + directory + "/pwfile",
                "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync",
            ])
        try start()
    }

    deinit {
        kill()
        try? FileManager.default.removeItem(atPath: directory)
    }

    static let logger: Logger = {
        var l = Logger(label: "sinkd.test.postgres")
        l.logLevel = .critical
        return l
    }()

    var url: String { "postgres://\(Self.user):\(Self.password)@127.0.0.1:\(port)/conductor" }

    func start() throws {
        let p = Process()
        let arguments = [
            bin + "/postgres", "-D", directory + "/data", "-p", "\(port)", "-k", directory,
            "-c", "listen_addresses=127.0.0.1", "-c", "ssl=on", "-c", "timezone=UTC",
            "-c", "ssl_cert_file=\(certificates.certificateFile)", "-c", "ssl_key_file=\(certificates.keyFile)",
        ]
        if geteuid() == 0 {
            p.executableURL = URL(fileURLWithPath: "/usr/sbin/runuser")
            p.arguments = ["-u", "postgres", "--"] + arguments
        } else {
            p.executableURL = URL(fileURLWithPath: arguments[0])
            p.arguments = Array(arguments.dropFirst())
        }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        Self.running.withLockedValue { _ = $0.insert(directory) }
        let deadline = Date().addingTimeInterval(30)
        while !LoopbackTCP.canConnect(port: port) {
            guard Date() < deadline, p.isRunning else {
                throw Failure(description: "postgres did not start on port \(port)")
            }
            usleep(50_000)
        }
    }

    /// A crash as PostgreSQL knows it: SIGQUIT to the postmaster (immediate shutdown: every
    /// backend exits at once, nothing is checkpointed; the next start runs crash recovery).
    func kill() {
        guard let p = process else { return }
        if let postmaster = postmasterPID() { Glibc.kill(postmaster, SIGQUIT) }
        p.waitUntilExit()
        process = nil
        _ = Self.running.withLockedValue { $0.remove(directory) }
    }

    private func postmasterPID() -> pid_t? {
        guard let text = try? String(contentsOfFile: directory + "/data/postmaster.pid", encoding: .utf8),
            let first = text.split(separator: "\n").first
        else { return nil }
        return pid_t(first)
    }

    /// Servers still running when the test process exits are stopped then (a test that fails
    /// early never reaches its own cleanup).
    static let running: NIOLockedValueBox<Set<String>> = {
        atexit {
            for directory in PostgresServer.running.withLockedValue({ $0 }) {
                if let text = try? String(contentsOfFile: directory + "/data/postmaster.pid", encoding: .utf8),
                    let first = text.split(separator: "\n").first, let pid = pid_t(first)
                {
                    Glibc.kill(pid, SIGQUIT)
                }
            }
        }
        return NIOLockedValueBox([])
    }()

    /// Stops the server (each test ends with it; the exit handler catches the ones that threw).
    func stop() async {
        _ = try? await offThePool { self.kill() }
    }

    func restart() async throws {
        try await offThePool { try self.start() }
        try await waitUntilReady()
    }

    private func waitUntilReady() async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            do {
                try await admin("postgres") { _ in }
                return
            } catch {
                guard ContinuousClock.now < deadline else {
                    throw Failure(description: "postgres does not accept connections: \(error)")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    /// A connection of the test's own (creating tables, reading rows back).
    func admin<T: Sendable>(
        _ database: String = "conductor", _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        let configuration = PostgresConnection.Configuration(
            host: "127.0.0.1", port: port, username: Self.user, password: Self.password, database: database,
            tls: .disable)
        let c = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: Self.logger)
        do {
            let value = try await body(c)
            try? await c.close()
            return value
        } catch {
            try? await c.close()
            throw error
        }
    }

    /// Conductor's QueueDAO tables, as its migrations (V1..V6) leave them.
    func createConductorTables() async throws {
        try await admin { c in
            try await c.query(
                """
                CREATE TABLE queue (queue_name varchar(255) PRIMARY KEY, created_on timestamp default current_timestamp)
                """, logger: Self.logger)
            try await c.query(
                """
                CREATE TABLE queue_message (created_on timestamp not null default current_timestamp,
                  deliver_on timestamp default current_timestamp, queue_name varchar(255) not null,
                  message_id varchar(255) not null, priority integer default 0, popped boolean default false,
                  offset_time_seconds bigint, payload text, PRIMARY KEY (queue_name, message_id))
                """, logger: Self.logger)
        }
    }

    struct Message: Sendable, Equatable {
        var queue: String
        var id: String
        var priority: Int
        var popped: Bool
        var offset: Int64?
        var payload: String
    }

    func messages() async throws -> [Message] {
        try await admin { c in
            var out: [Message] = []
            let rows = try await c.query(
                "SELECT queue_name, message_id, priority, popped, offset_time_seconds, payload FROM queue_message ORDER BY queue_name, message_id",
                logger: Self.logger)
            for try await (q, m, p, popped, o, payload) in rows.decode((String, String, Int, Bool, Int64?, String).self)
            {
                out.append(Message(queue: q, id: m, priority: p, popped: popped, offset: o, payload: payload))
            }
            return out
        }
    }

    func queues() async throws -> [String] {
        try await admin { c in
            var out: [String] = []
            for try await q in try await c.query(
                "SELECT queue_name FROM queue ORDER BY queue_name", logger: Self.logger
            ).decode(String.self) { out.append(q) }
            return out
        }
    }

    func waitForMessages(_ count: Int, timeout: Duration = .seconds(30)) async throws -> [Message] {
        let deadline = ContinuousClock.now + timeout
        var got = (try? await messages()) ?? []
        while got.count < count, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            got = (try? await messages()) ?? []
        }
        return got
    }

    private func asPostgres(_ executable: String, _ arguments: [String]) throws {
        if geteuid() == 0 {
            try run("/usr/sbin/runuser", ["-u", "postgres", "--", executable] + arguments)
        } else {
            try run(executable, arguments)
        }
    }

    private func run(_ executable: String, _ arguments: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        let err = Pipe()
        p.standardOutput = FileHandle.nullDevice
        p.standardError = err
        try p.run()
        let errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw Failure(description: "\(executable) failed: \(errors.suffix(400))")
        }
    }
}
