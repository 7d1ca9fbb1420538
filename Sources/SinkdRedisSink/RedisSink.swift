import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SinkdCore
import SinkdDelivery

/// Where and how to reach Redis: `redis://[[user]:password@]host[:port][/db]`.
public struct RedisEndpoint: Sendable, Equatable {
    public var host = "127.0.0.1"
    public var port = 6379
    public var user: String?
    public var password: String?
    public var database = 0

    public init(url: String) throws(SinkConnectionError) {
        guard url.hasPrefix("redis://") else { throw SinkConnectionError("sinks.redis.url must start with redis://") }
        var rest = Substring(url.dropFirst("redis://".count))
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                let u = String(userInfo[..<colon])
                user = u.isEmpty ? nil : u
                let raw = userInfo[userInfo.index(after: colon)...]
                password = PercentDecoding.decode(raw) ?? String(raw)
            } else if !userInfo.isEmpty {
                password = String(userInfo)
            }
        }
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !db.isEmpty {
                guard let n = Int(db), n >= 0 else {
                    throw SinkConnectionError("sinks.redis.url: database '\(db)' is not a number")
                }
                database = n
            }
        }
        if let colon = rest.lastIndex(of: ":") {
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65_535).contains(p) else {
                throw SinkConnectionError("sinks.redis.url: bad port")
            }
            port = p
            rest = rest[..<colon]
        }
        if !rest.isEmpty { host = String(rest) }
    }
}

/// `redis:STREAM`: `XADD STREAM [MAXLEN ~ maxlen] * id <id> payload <body>` plus the context
/// fields that are present, pipelined, over `pool_size` connections.
public final class RedisSinkFamily: SinkFamily {
    public let name = ConfigFamily.redis
    let config: RedisSinkConfig
    let group: EventLoopGroup

    public init(config: RedisSinkConfig, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.config = config
        self.group = group
    }

    public func limits(for address: SinkAddress, options: PipelineOptions) -> SinkLimits {
        // Redis takes bulk strings up to 512 MB; the request line limit comes first in practice.
        SinkLimits(maxBatchCount: options.batchSize, maxBatchBytes: 16 << 20, maxMessageBytes: 512 << 20)
    }

    public func makeClient(
        for address: SinkAddress, options: PipelineOptions
    ) throws(SinkConnectionError) -> any SinkClient {
        guard case .redisStream(let stream) = address.target else {
            throw SinkConnectionError("not a redis sink: \(address)")
        }
        return RedisStreamClient(
            stream: stream, endpoint: try RedisEndpoint(url: config.url), maxlen: config.maxlen,
            replyTimeout: config.replyTimeout, poolSize: options.poolSize, group: group)
    }
}

final class RedisStreamClient: SinkClient, Sendable {
    let stream: [UInt8]
    let endpoint: RedisEndpoint
    let maxlen: Int
    let replyTimeout: Duration
    let group: EventLoopGroup
    private let pool: NIOLockedValueBox<(connections: [RedisConnection?], next: Int)>

    init(
        stream: String, endpoint: RedisEndpoint, maxlen: Int, replyTimeout: Duration = .seconds(10), poolSize: Int,
        group: EventLoopGroup
    ) {
        self.stream = Array(stream.utf8)
        self.endpoint = endpoint
        self.maxlen = maxlen
        self.replyTimeout = replyTimeout
        self.group = group
        self.pool = NIOLockedValueBox((Array(repeating: nil, count: max(1, poolSize)), 0))
    }

    func send(_ batch: [SequencedRecord]) async throws(SinkConnectionError) -> [DeliveryOutcome] {
        try await send(batch, queued: {})
    }

    /// Pipelined on the slot's connection; `queued` once the batch's XADDs are queued on it.
    func send(
        _ batch: [SequencedRecord], queued: @escaping @Sendable () -> Void
    ) async throws(SinkConnectionError) -> [DeliveryOutcome] {
        let (slot, existing) = pool.withLockedValue { p -> (Int, RedisConnection?) in
            let slot = p.next
            p.next = (p.next + 1) % p.connections.count
            return (slot, p.connections[slot])
        }
        let connection: RedisConnection
        if let existing, existing.isActive {
            connection = existing
        } else {
            connection = try await connect()
            pool.withLockedValue { $0.connections[slot] = connection }
        }
        let replies: [RESPValue]
        do {
            replies = try await connection.send(replies: batch.count, queued: queued) { out in
                out.reserveCapacity(minimumWritableBytes: batch.reduce(0) { $0 + $1.record.payload.count + 160 })
                for item in batch { encodeXADD(item.record, into: &out) }
            }
        } catch {
            await drop(connection, slot: slot)
            throw SinkConnectionError("redis \(endpoint.host):\(endpoint.port): \(error)")
        }
        var outcomes: [DeliveryOutcome] = []
        outcomes.reserveCapacity(replies.count)
        for reply in replies {
            guard let outcome = Self.outcome(reply) else {
                // Not what XADD answers: the server is not redis, or its replies no longer match
                // the commands. Nothing in the batch counts as delivered.
                await drop(connection, slot: slot)
                throw SinkConnectionError(
                    "redis \(endpoint.host):\(endpoint.port) answered XADD with \(Self.describe(reply)), "
                        + "not an entry id or an error; the connection was closed")
            }
            outcomes.append(outcome)
        }
        return outcomes
    }

    private func drop(_ connection: RedisConnection, slot: Int) async {
        await connection.close()
        pool.withLockedValue { if $0.connections[slot] === connection { $0.connections[slot] = nil } }
    }

    private func connect() async throws(SinkConnectionError) -> RedisConnection {
        let connection: RedisConnection
        do {
            connection = try await RedisConnection.connect(
                host: endpoint.host, port: endpoint.port, group: group, timeout: .seconds(5),
                replyTimeout: TimeAmount(replyTimeout))
        } catch {
            throw SinkConnectionError("cannot connect to redis \(endpoint.host):\(endpoint.port): \(error)")
        }
        var setup: [[[UInt8]]] = []
        if let password = endpoint.password {
            setup.append([Array("AUTH".utf8)] + (endpoint.user.map { [Array($0.utf8)] } ?? []) + [Array(password.utf8)])
        }
        if endpoint.database != 0 { setup.append([Array("SELECT".utf8), Array(String(endpoint.database).utf8)]) }
        guard !setup.isEmpty else { return connection }
        do {
            for reply in try await connection.send(setup) {
                if case .error(let message) = reply {
                    await connection.close()
                    // Authentication and database errors pause the sink; they are not about a record.
                    throw SinkConnectionError("redis refused the connection setup: \(message)")
                }
            }
        } catch let error as SinkConnectionError {
            throw error
        } catch {
            await connection.close()
            throw SinkConnectionError("redis \(endpoint.host):\(endpoint.port): \(error)")
        }
        return connection
    }

    /// The XADD of one record, appended to `out` (no intermediate arrays: this is the hot path).
    func encodeXADD<Out: RESPOutput>(_ r: EventRecord, into out: inout Out) {
        // The context fields one by one, not through an array of them: that array was a heap
        // call per record.
        let version = r.workflowVersion.map { String($0) }
        let priority = r.priority.map { String($0) }
        func count(_ value: String?) -> Int { value == nil ? 0 : 2 }
        let parts =
            7 + (maxlen > 0 ? 3 : 0) + count(r.workflowInstanceId) + count(r.workflowType) + count(r.correlationId)
            + count(r.taskRefName) + count(version) + count(priority)
        RESP.appendHeader(UInt8(ascii: "*"), parts, into: &out)
        RESP.appendBulk("XADD".utf8, into: &out)
        RESP.appendBulk(stream, into: &out)
        if maxlen > 0 {
            RESP.appendBulk("MAXLEN".utf8, into: &out)
            RESP.appendBulk("~".utf8, into: &out)
            RESP.appendBulk(String(maxlen).utf8, into: &out)
        }
        RESP.appendBulk("*".utf8, into: &out)
        RESP.appendBulk("id".utf8, into: &out)
        RESP.appendBulk(r.id.utf8, into: &out)
        RESP.appendBulk("payload".utf8, into: &out)
        RESP.appendBulk(r.payload, into: &out)
        func field(_ name: StaticString, _ value: String?) {
            guard let value else { return }
            RESP.appendBulk(UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount), into: &out)
            RESP.appendBulk(value.utf8, into: &out)
        }
        field("workflowInstanceId", r.workflowInstanceId)
        field("workflowType", r.workflowType)
        field("correlationId", r.correlationId)
        field("taskRefName", r.taskRefName)
        field("workflowVersion", version)
        field("priority", priority)
    }

    /// An XADD reply: an entry id (`MS-SEQ`) means delivered; errors that pass are retryable,
    /// others permanent; anything else is not an answer to XADD (nil).
    static func outcome(_ reply: RESPValue) -> DeliveryOutcome? {
        switch reply {
        case .bulkString(.some(let id)) where isEntryID(id): return .delivered
        case .error(let message):
            let transient = [
                "LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "READONLY", "OOM", "CLUSTERDOWN", "NOREPLICAS",
            ]
            if transient.contains(where: { message.hasPrefix($0) }) { return .retryable("redis: \(message)") }
            return .permanent("redis: \(message)")
        default:
            return nil
        }
    }

    /// Digits, a dash, digits: the id redis gives a stream entry.
    static func isEntryID(_ id: [UInt8]) -> Bool {
        guard let dash = id.firstIndex(of: UInt8(ascii: "-")), dash > 0, dash < id.count - 1 else { return false }
        return id[..<dash].allSatisfy { (0x30...0x39).contains($0) }
            && id[(dash + 1)...].allSatisfy { (0x30...0x39).contains($0) }
    }

    /// A reply for an error message, short whatever its size.
    static func describe(_ reply: RESPValue) -> String {
        switch reply {
        case .simpleString(let s): return "+\(s.prefix(40))"
        case .integer(let n): return ":\(n)"
        case .bulkString(nil): return "a nil bulk string"
        case .bulkString(.some(let b)): return "the bulk string '\(String(decoding: b.prefix(40), as: UTF8.self))'"
        case .array: return "an array"
        case .error(let e): return "-\(e.prefix(40))"
        }
    }

    func close() async {
        let connections = pool.withLockedValue { p -> [RedisConnection] in
            defer { p.connections = Array(repeating: nil, count: p.connections.count) }
            return p.connections.compactMap { $0 }
        }
        for c in connections { await c.close() }
    }
}
