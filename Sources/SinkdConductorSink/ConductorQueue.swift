import SinkdCore
import SinkdDelivery

/// Where sinkd reaches Conductor's PostgreSQL: `sinks.conductor.postgres`, the URL first, then
/// the explicit keys over its parts. No I/O.
public struct PostgresEndpoint: Sendable, Equatable {
    public var host = "127.0.0.1"
    public var port = 5432
    public var user = "conductor"
    public var password: String?
    public var database = "conductor"
    public var sslMode: PostgresSSLMode = .prefer
    public var caFile = ""

    public init(_ config: ConductorSinkConfig) throws(SinkConnectionError) {
        try parse(url: config.postgresURL)
        if let v = config.host, !v.isEmpty { host = v }
        if let v = config.port { port = v }
        if let v = config.database, !v.isEmpty { database = v }
        if let v = config.user, !v.isEmpty { user = v }
        if let v = config.password { password = v }
        if let v = config.sslMode { sslMode = v }
        caFile = config.caFile
    }

    private mutating func parse(url: String) throws(SinkConnectionError) {
        var rest: Substring
        if url.hasPrefix("postgres://") {
            rest = url.dropFirst("postgres://".count)
        } else if url.hasPrefix("postgresql://") {
            rest = url.dropFirst("postgresql://".count)
        } else {
            throw SinkConnectionError("sinks.conductor.postgres.url must start with postgres://")
        }
        if let q = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: q)...].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                guard kv.count == 2 else { continue }
                if kv[0] == "sslmode" {
                    guard let mode = PostgresSSLMode(rawValue: String(kv[1])) else {
                        throw SinkConnectionError(
                            "sinks.conductor.postgres.url: sslmode '\(kv[1])' (known: disable, prefer, require, verify-full)"
                        )
                    }
                    sslMode = mode
                }
            }
            rest = rest[..<q]
        }
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            if !db.isEmpty { database = Self.decoded(db) }
            rest = rest[..<slash]
        }
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let parts = userInfo.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            if !parts[0].isEmpty { user = Self.decoded(parts[0]) }
            if parts.count == 2 { password = Self.decoded(parts[1]) }
        }
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65_535).contains(p) else {
                throw SinkConnectionError("sinks.conductor.postgres.url: bad port")
            }
            port = p
            rest = rest[..<colon]
        }
        if !rest.isEmpty { host = String(rest).trimmingCharacters(in: ["[", "]"]) }
    }

    static func decoded(_ s: Substring) -> String {
        PercentDecoding.decode(s) ?? String(s)
    }

    /// For logs and errors: never the password.
    public var description: String { "postgres://\(user)@\(host):\(port)/\(database) (sslmode \(sslMode.rawValue))" }
}

/// Conductor's QueueDAO layout (postgres-persistence, migrations V1..V6) and what sinkd writes
/// into it: the effect of `PostgresQueueDAO.push` for every record of a batch, as one prepared
/// statement over unnested arrays (one transaction, one round trip), whatever the batch size.
/// No I/O.
public enum ConductorQueue {
    /// The columns sinkd needs, by table (checked at connect: sinkd never creates or alters them).
    public static let requiredColumns: [(table: String, columns: [String])] = [
        ("queue", ["queue_name"]),
        (
            "queue_message",
            ["deliver_on", "queue_name", "message_id", "priority", "popped", "offset_time_seconds", "payload"]
        ),
    ]

    public static let columnsQuery = """
        SELECT table_name::text, column_name::text FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name IN ('queue', 'queue_message')
        """

    /// The whole batch in one statement, so in one transaction and one round trip: a
    /// data-modifying CTE makes sure each queue row exists (ON CONFLICT DO NOTHING), then every
    /// message is upserted: deliver_on now, offset 0, not popped; a message already there gets the
    /// new payload and deliver_on (Conductor's push replaces). $1 queue names, $2 message ids,
    /// $3 priorities, $4 payloads, one element per row.
    public static let upsertBatch = """
        WITH queues AS (
          INSERT INTO queue (queue_name) SELECT DISTINCT q FROM unnest($1::text[]) AS t(q) ON CONFLICT (queue_name) DO NOTHING
        )
        INSERT INTO queue_message (deliver_on, queue_name, message_id, priority, offset_time_seconds, popped, payload)
        SELECT current_timestamp, q, m, p, 0, false, b FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[]) AS t(q, m, p, b)
        ON CONFLICT (queue_name, message_id) DO UPDATE SET payload = excluded.payload, deliver_on = excluded.deliver_on
        """

    /// One row to write.
    public struct Row: Sendable, Equatable {
        public var queue: String
        public var messageID: String
        public var priority: Int32
        public var payload: String
    }

    /// What a batch becomes: the rows (one per (queue, message id), the latest record winning, so
    /// that one statement never updates a row twice) and, per record, the index of its row or the
    /// reason it can never be written.
    public struct Plan: Sendable, Equatable {
        public var rows: [Row] = []
        public var rowOfRecord: [Result<Int, Refusal>] = []
    }

    public struct Refusal: Error, Sendable, Equatable {
        public var reason: String
    }

    /// The DAO queue of a `conductor:...` sink identity: the part after `conductor:`.
    public static func queueName(of identity: String) -> String {
        identity.hasPrefix("conductor:") ? String(identity.dropFirst("conductor:".count)) : identity
    }

    public static func plan(_ batch: [SequencedRecord], queue: String) -> Plan {
        var plan = Plan()
        var rowIndex: [String: Int] = [:]
        let queueTooLong = queue.count > 255
        for item in batch {
            let r = item.record
            if queueTooLong {
                plan.rowOfRecord.append(
                    .failure(
                        Refusal(
                            reason:
                                "conductor: the queue name '\(queue.prefix(40))…' is \(queue.count) characters; queue.queue_name is varchar(255)"
                        )))
                continue
            }
            if r.id.count > 255 {
                plan.rowOfRecord.append(
                    .failure(
                        Refusal(
                            reason:
                                "conductor: the message id is \(r.id.count) characters; queue_message.message_id is varchar(255)"
                        )))
                continue
            }
            let row = Row(
                queue: queue, messageID: r.id, priority: Int32(r.priority ?? 0),
                payload: String(decoding: r.payload, as: UTF8.self))
            if let existing = rowIndex[r.id] {
                plan.rows[existing] = row
                plan.rowOfRecord.append(.success(existing))
            } else {
                rowIndex[r.id] = plan.rows.count
                plan.rowOfRecord.append(.success(plan.rows.count))
                plan.rows.append(row)
            }
        }
        return plan
    }

    /// What a failed statement's SQLSTATE means.
    public enum ErrorKind: Sendable, Equatable {
        /// The tables or columns are missing: pause the sink (nothing is dead-lettered).
        case missingSchema
        /// Credentials or database refused: pause the sink.
        case refused
        /// A value does not fit the column: find the record, dead-letter it.
        case valueTooLong
        /// The server is shutting down, starting up, out of connections, or the connection failed.
        case unavailable
        /// Serialization failures, deadlocks, lock timeouts: retry the records.
        case retryable
        /// Anything else about the data: retry (bounded by the retry policy), with the server's message.
        case other
    }

    public static func kind(sqlState: String) -> ErrorKind {
        switch sqlState {
        case "42P01", "42703", "3F000": .missingSchema  // undefined table / column, invalid schema
        case "28P01", "28000", "3D000", "42501": .refused  // password, authorization, no database, privilege
        // The server shutting down, crashed, starting up, or the connection failing: not about the
        // records; the sink pauses and reconnects.
        case "57P01", "57P02", "57P03", "08000", "08003", "08006", "53300": .unavailable
        case "22001": .valueTooLong
        case "40001", "40P01", "55P03": .retryable
        default: .other
        }
    }
}
