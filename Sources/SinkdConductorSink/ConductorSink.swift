import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import SinkdCore
import SinkdDelivery
import SinkdTLS

/// `conductor` and `conductor:NAME` sinks, delivered into Conductor's PostgreSQL queue tables
/// (the QueueDAO layout) so that Conductor's event handlers on `conductor:<workflow>:<name>` fire
/// as if Conductor had published in-process. One transaction per batch; a pool of `pool_size`
/// connections shared by all conductor sinks.
public final class ConductorSinkFamily: SinkFamily {
    public let name = ConfigFamily.conductor
    let config: ConductorSinkConfig
    let endpoint: Result<PostgresEndpoint, SinkConnectionError>
    let pool: PostgresLeasePool
    let logger: Logger

    /// The TimeZone every session is started with (ConductorSinkConfig.timeZone).
    let sessionTimeZone: String
    private let warned = NIOLockedValueBox<Set<String>>([])

    public init(
        config: ConductorSinkConfig, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "sinkd.conductor"),
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) {
        self.config = config
        self.logger = logger
        let zone = config.timeZone.isEmpty ? LocalTimeZone.name(environment: environment) : config.timeZone
        sessionTimeZone = zone
        let endpoint: Result<PostgresEndpoint, SinkConnectionError>
        do throws(SinkConnectionError) {
            endpoint = .success(try PostgresEndpoint(config))
        } catch {
            endpoint = .failure(error)
        }
        self.endpoint = endpoint
        pool = PostgresLeasePool(size: max(1, config.options.poolSize), group: group, logger: logger) {
            () throws(SinkConnectionError) in
            switch endpoint {
            case .success(let e): return try Self.connectionConfiguration(e, timeZone: zone)
            case .failure(let error): throw error
            }
        }
    }

    public func limits(for address: SinkAddress, options: PipelineOptions) -> SinkLimits {
        // A batch is one transaction; PostgreSQL takes text values up to 1 GB.
        SinkLimits(maxBatchCount: options.batchSize, maxBatchBytes: 32 << 20, maxMessageBytes: 64 << 20)
    }

    public func makeClient(
        for address: SinkAddress, options: PipelineOptions
    ) throws(SinkConnectionError) -> any SinkClient {
        guard case .conductorQueue = address.target else {
            throw SinkConnectionError("not a conductor sink: \(address)")
        }
        _ = try endpoint.get()
        let queue = ConductorQueue.queueName(of: address.identity)
        // `conductor:` (and `conductor:conductor:`) name the queue `<workflowType>:` in Conductor
        // too; said once, since it is rarely what the workflow's author meant.
        if queue.hasSuffix(":"), warned.withLockedValue({ $0.insert(address.identity).inserted }) {
            logger.warning(
                "this sink names the DAO queue '\(queue)', ending in ':', as Conductor expands it (an empty name after 'conductor:')",
                metadata: ["sink": "\(address.identity)"])
        }
        return ConductorQueueClient(family: self, queue: queue)
    }

    public func shutdown() async {
        await pool.closeAll()
    }

    static func connectionConfiguration(
        _ e: PostgresEndpoint, timeZone: String
    ) throws(SinkConnectionError) -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS
        switch e.sslMode {
        case .disable:
            tls = .disable
        case .prefer:
            tls = .prefer(try TLSContexts.client(TLSConfig(verify: false), section: "sinks.conductor.postgres"))
        case .require:
            tls = .require(try TLSContexts.client(TLSConfig(verify: false), section: "sinks.conductor.postgres"))
        case .verifyFull:
            tls = .require(
                try TLSContexts.client(TLSConfig(caFile: e.caFile, verify: true), section: "sinks.conductor.postgres"))
        }
        var c = PostgresConnection.Configuration(
            host: e.host, port: e.port, username: e.user, password: e.password, database: e.database, tls: tls)
        c.options.connectTimeout = .seconds(5)
        // Set at startup, so every session compares deliver_on in the engine's zone, as pgjdbc
        // sets the JVM's (issue 20, item 1). An unknown zone fails the connection with the
        // server's message: the sink pauses and says so.
        c.options.additionalStartupParameters = [("TimeZone", timeZone)]
        if e.sslMode == .verifyFull, !e.host.isIPAddress { c.options.tlsServerName = e.host }
        return c
    }
}

/// The shared connections: at most `size` open, each leased by one batch at a time (a batch is a
/// transaction). A connection whose tables were not checked yet is checked before its first use.
final class PostgresLeasePool: Sendable {
    private struct State {
        var idle: [PostgresConnection] = []
        var open = 0
        var waiters: [CheckedContinuation<Next, Never>] = []
        var closed = false
    }

    private let state = NIOLockedValueBox(State())
    private let size: Int
    private let group: EventLoopGroup
    private let logger: Logger
    private let configuration: @Sendable () throws(SinkConnectionError) -> PostgresConnection.Configuration
    private let ids = ManagedAtomicCounter()

    init(
        size: Int, group: EventLoopGroup, logger: Logger,
        configuration: @escaping @Sendable () throws(SinkConnectionError) -> PostgresConnection.Configuration
    ) {
        self.size = size
        self.group = group
        self.logger = logger
        self.configuration = configuration
    }

    /// Runs `body` on a leased connection. A connection `body` reports broken (by throwing
    /// `Broken`) is closed instead of returned.
    func withConnection<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        let connection = try await lease()
        do {
            let value = try await body(connection)
            release(connection, broken: false)
            return value
        } catch {
            release(connection, broken: error is Broken || connection.isClosed)
            throw error
        }
    }

    struct Broken: Error {
        var underlying: any Error
    }

    private enum Next { case use(PostgresConnection), connect, retry, shutDown }

    private func lease() async throws -> PostgresConnection {
        while true {
            // The decision and, when there is nothing to take, the registration as a waiter happen
            // under one lock: a release between the two would otherwise wake nobody.
            let next: Next = await withCheckedContinuation { continuation in
                let decided = state.withLockedValue { s -> Next? in
                    if s.closed { return .shutDown }
                    while let c = s.idle.popLast() {
                        if !c.isClosed { return .use(c) }
                        s.open -= 1
                    }
                    if s.open < size {
                        s.open += 1
                        return .connect
                    }
                    s.waiters.append(continuation)
                    return nil
                }
                if let decided { continuation.resume(returning: decided) }
            }
            switch next {
            case .use(let c):
                return c
            case .connect:
                do {
                    return try await connect()
                } catch {
                    state.withLockedValue { $0.open -= 1 }
                    wakeOne()
                    throw error
                }
            case .retry:
                continue
            case .shutDown:
                throw SinkConnectionError("the conductor sinks are shutting down")
            }
        }
    }

    /// Connects (postgres-nio bounds the TCP connect and the startup by `connectTimeout`), then
    /// checks the tables within `operationLimit`.
    private func connect() async throws -> PostgresConnection {
        let configuration = try self.configuration()
        let c = try await PostgresConnection.connect(
            on: group.next(), configuration: configuration, id: ids.next(), logger: logger)
        do {
            let logger = self.logger
            try await Self.bounded(c, limit: Self.operationLimit) { try await Self.checkTables($0, logger: logger) }
        } catch {
            try? await c.close()
            throw error
        }
        return c
    }

    /// How long one statement (a batch's upsert, the table check) may take before its connection
    /// is given up as broken.
    static let operationLimit: Duration = .seconds(30)

    /// Runs `operation` on `connection`, but returns (throwing `Broken`) as soon as the connection
    /// closes or `limit` passes, without waiting for the operation itself. postgres-nio never
    /// completes a request written just after its channel closed (the server crashed between the
    /// lease and the write): awaiting it, as a task group would, hangs the batch forever.
    static func bounded<T: Sendable>(
        _ connection: PostgresConnection, limit: Duration,
        _ operation: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        let waiter = NIOLockedValueBox<CheckedContinuation<T, any Error>?>(nil)
        let finish: @Sendable (Result<T, any Error>) -> Void = { result in
            waiter.withLockedValue { w -> CheckedContinuation<T, any Error>? in
                defer { w = nil }
                return w
            }?.resume(with: result)
        }
        return try await withCheckedThrowingContinuation { continuation in
            waiter.withLockedValue { $0 = continuation }
            let timer = connection.eventLoop.scheduleTask(in: TimeAmount(limit)) {
                finish(.failure(Broken(underlying: SinkConnectionError("PostgreSQL did not answer within \(limit)"))))
                connection.close().whenComplete { _ in }
            }
            let watch = CloseWatch.of(connection)
            watch.onClose {
                timer.cancel()
                finish(.failure(Broken(underlying: SinkConnectionError("the connection to PostgreSQL closed"))))
            }
            Task {
                let result: Result<T, any Error>
                do {
                    result = .success(try await operation(connection))
                } catch {
                    result = .failure(error)
                }
                timer.cancel()
                watch.clear()
                finish(result)
            }
        }
    }

    private func release(_ c: PostgresConnection, broken: Bool) {
        let closeIt = state.withLockedValue { s -> Bool in
            if broken || s.closed || c.isClosed {
                s.open -= 1
                return true
            }
            s.idle.append(c)
            return false
        }
        if closeIt { Task { try? await c.close() } }
        wakeOne()
    }

    private func wakeOne() {
        let waiter = state.withLockedValue { s -> CheckedContinuation<Next, Never>? in
            s.waiters.isEmpty ? nil : s.waiters.removeFirst()
        }
        waiter?.resume(returning: .retry)
    }

    func closeAll() async {
        let (idle, waiters) = state.withLockedValue { s -> ([PostgresConnection], [CheckedContinuation<Next, Never>]) in
            s.closed = true
            defer {
                s.open -= s.idle.count
                s.idle = []
                s.waiters = []
            }
            return (s.idle, s.waiters)
        }
        for w in waiters { w.resume(returning: .retry) }
        for c in idle { try? await c.close() }
    }

    /// Conductor's migrations create the tables; sinkd only checks they are there.
    static func checkTables(_ c: PostgresConnection, logger: Logger) async throws {
        var found: [String: Set<String>] = [:]
        for try await (table, column) in try await c.query(
            PostgresQuery(unsafeSQL: ConductorQueue.columnsQuery), logger: logger
        ).decode((String, String).self) {
            found[table, default: []].insert(column)
        }
        var missing: [String] = []
        for (table, columns) in ConductorQueue.requiredColumns {
            guard let have = found[table] else {
                missing.append("table \(table)")
                continue
            }
            let absent = columns.filter { !have.contains($0) }
            if !absent.isEmpty { missing.append("\(table) columns \(absent.joined(separator: ", "))") }
        }
        if !missing.isEmpty {
            throw SinkConnectionError(
                "Conductor's queue tables are missing in this database (\(missing.joined(separator: "; "))): sinkd never creates them; start Conductor once with PostgreSQL persistence (its migrations create them) or point sinks.conductor.postgres at Conductor's database"
            )
        }
    }
}

/// What to do when a connection closes, registered once per connection: a callback per statement
/// on the connection's closeFuture would pile up for as long as the connection lives.
final class CloseWatch: Sendable {
    private let state = NIOLockedValueBox<(closed: Bool, action: (@Sendable () -> Void)?)>((false, nil))
    private static let watches = NIOLockedValueBox<[ObjectIdentifier: CloseWatch]>([:])

    /// The watch of `connection`, created (and hooked to its closeFuture) on first use.
    static func of(_ connection: PostgresConnection) -> CloseWatch {
        let key = ObjectIdentifier(connection)
        let (watch, created) = watches.withLockedValue { all -> (CloseWatch, Bool) in
            if let existing = all[key] { return (existing, false) }
            let watch = CloseWatch()
            all[key] = watch
            return (watch, true)
        }
        if created {
            connection.closeFuture.whenComplete { _ in
                _ = watches.withLockedValue { $0.removeValue(forKey: key) }
                watch.fire()
            }
        }
        return watch
    }

    /// Runs `action` when the connection closes (at once if this watch saw it close). One action at a time (a
    /// connection runs one statement at a time); a later call replaces it.
    func onClose(_ action: @escaping @Sendable () -> Void) {
        let closed = state.withLockedValue { s -> Bool in
            if !s.closed { s.action = action }
            return s.closed
        }
        if closed { action() }
    }

    func clear() {
        state.withLockedValue { $0.action = nil }
    }

    private func fire() {
        let action = state.withLockedValue { s -> (@Sendable () -> Void)? in
            s.closed = true
            defer { s.action = nil }
            return s.action
        }
        action?()
    }
}

/// A counter for connection ids (logging only).
final class ManagedAtomicCounter: Sendable {
    private let value = NIOLockedValueBox(0)
    func next() -> Int {
        value.withLockedValue {
            $0 += 1; return $0
        }
    }
}

struct UpsertBatch: PostgresPreparedStatement {
    static let name = "sinkd_upsert_batch"
    static let sql = ConductorQueue.upsertBatch
    typealias Row = ()
    var rows: [ConductorQueue.Row]
    func makeBindings() throws -> PostgresBindings {
        var b = PostgresBindings(capacity: 4)
        b.append(rows.map(\.queue))
        b.append(rows.map(\.messageID))
        b.append(rows.map(\.priority))
        b.append(rows.map(\.payload))
        return b
    }
    func decodeRow(_ row: PostgresRow) throws -> () {}
}

final class ConductorQueueClient: SinkClient, Sendable {
    let family: ConductorSinkFamily
    let queue: String

    init(family: ConductorSinkFamily, queue: String) {
        self.family = family
        self.queue = queue
    }

    func send(_ batch: [SequencedRecord]) async throws(SinkConnectionError) -> [DeliveryOutcome] {
        let plan = ConductorQueue.plan(batch, queue: queue)
        let failure = await write(plan.rows)
        switch failure {
        case nil:
            return Self.outcomes(plan, rowFailed: { _ in nil })
        case .connection(let error):
            throw error
        case .rows(let outcome):
            return Self.outcomes(plan, rowFailed: { _ in outcome })
        case .valueTooLong:
            // Rare (the lengths were checked): write row by row to find which cannot be stored.
            var failed: [Int: DeliveryOutcome] = [:]
            for (i, row) in plan.rows.enumerated() {
                switch await write([row]) {
                case nil: break
                case .connection(let error): throw error
                case .rows(let outcome): failed[i] = outcome
                case .valueTooLong(let message): failed[i] = .permanent("conductor: \(message)")
                }
            }
            return Self.outcomes(plan, rowFailed: { failed[$0] })
        }
    }

    static func outcomes(_ plan: ConductorQueue.Plan, rowFailed: (Int) -> DeliveryOutcome?) -> [DeliveryOutcome] {
        plan.rowOfRecord.map { result in
            switch result {
            case .success(let row): rowFailed(row) ?? .delivered
            case .failure(let refusal): .permanent(refusal.reason)
            }
        }
    }

    enum WriteFailure: Sendable {
        case connection(SinkConnectionError)
        case rows(DeliveryOutcome)
        case valueTooLong(String)
    }

    /// One statement (its own transaction): the queue rows, then every message. nil when committed.
    private func write(_ rows: [ConductorQueue.Row]) async -> WriteFailure? {
        guard !rows.isEmpty else { return nil }
        let logger = family.logger
        do {
            try await family.pool.withConnection { connection -> Void in
                do {
                    _ = try await PostgresLeasePool.bounded(connection, limit: PostgresLeasePool.operationLimit) {
                        try await $0.execute(UpsertBatch(rows: rows), logger: logger)
                    }
                } catch {
                    throw connection.isClosed && !(error is PostgresLeasePool.Broken)
                        ? PostgresLeasePool.Broken(underlying: error) : error
                }
            }
            return nil
        } catch let error as SinkConnectionError {
            return .connection(error)
        } catch {
            return Self.classify((error as? PostgresLeasePool.Broken)?.underlying ?? error, endpoint: family.endpoint)
        }
    }

    static func classify(_ error: any Error, endpoint: Result<PostgresEndpoint, SinkConnectionError>) -> WriteFailure {
        let place = (try? endpoint.get().description) ?? "postgres"
        guard let psql = error as? PSQLError else {
            return .connection(SinkConnectionError("\(place): \(error)"))
        }
        guard let state = psql.serverInfo?[.sqlState] else {
            // No server answer: the connection failed (refused, closed, timed out, TLS).
            return .connection(
                SinkConnectionError("\(place): \(psql.code.description)\(psql.underlying.map { ": \($0)" } ?? "")"))
        }
        let message = psql.serverInfo?[.message] ?? "error"
        switch ConductorQueue.kind(sqlState: state) {
        case .missingSchema:
            return .connection(
                SinkConnectionError(
                    "\(place): Conductor's queue tables are missing (\(state) \(message)): sinkd never creates them"))
        case .refused:
            return .connection(SinkConnectionError("\(place) refused sinkd (\(state)): \(message)"))
        case .unavailable:
            return .connection(SinkConnectionError("\(place) is unavailable (\(state)): \(message)"))
        case .valueTooLong:
            return .valueTooLong("\(state) \(message)")
        case .retryable, .other:
            return .rows(.retryable("\(place): \(state) \(message)"))
        }
    }

    func close() async {}
}
