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

/// The Conductor tests' server: SinkdTestServers' launcher (a private PostgreSQL on 127.0.0.1, TLS
/// on) with user `conductor`, database `conductor` and the requests the tests make through
/// PostgresNIO.
typealias PostgresServer = PostgresProcess

extension PostgresProcess {
    static let testUser = "conductor"
    static let testPassword = "s3cret"

    static func make() async throws -> PostgresProcess {
        try await offThePool {
            let server = try PostgresProcess(user: Self.testUser, password: Self.testPassword)
            try server.createDatabase("conductor")
            return server
        }
    }

    static let logger: Logger = {
        var l = Logger(label: "sinkd.test.postgres")
        l.logLevel = .critical
        return l
    }()

    var url: String { url(database: "conductor") }

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
                    throw TestServerFailure("postgres does not accept connections: \(error)")
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
            host: "127.0.0.1", port: port, username: user, password: password, database: database,
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
}
