import ArgumentParser
import Foundation
import SinkdIngest
import SinkdWAL

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

/// `sinkd-bench conductor`: socket → WAL (fsync always) → Conductor's queue tables in a private
/// PostgreSQL, beside psycopg running the same upserts with executemany in batches of the same
/// size, in the same run.
struct BenchConductor: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conductor",
        abstract: "End-to-end rows/s into Conductor's PostgreSQL queue tables, beside psycopg's executemany.",
        discussion:
            "Needs PostgreSQL (Debian postgresql) and psycopg (PyPI). Runs its own server in --directory (as the postgres user when run as root)."
    )

    @Option(help: "Where sinkd's WAL and the database are written.") var directory = ".sinkd-bench"
    @Option(help: "Rows per client (psycopg and sinkd).") var messages = 100_000
    @Option(help: "Payload bytes per message.") var payloadBytes = 1024
    @Option(help: "Rows per transaction (psycopg) and batch_size (sinkd).") var batchSize = 100
    @Option(help: "sinkd's pool_size (connections) and max_in_flight (batches per sink).") var poolSize = 8
    @Option(help: "Client connections to sinkd.") var connections = 4

    func run() throws {
        let dir = try freshBenchDirectory(directory)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try PostgresProcess(user: "conductor", password: "bench", directory: dir + "/pg")
        defer { db.kill() }
        try db.createDatabase("conductor")
        // The server has TLS on (the tests' launcher); both clients go without it.
        let sinkdURL = db.url(database: "conductor")
        let url = sinkdURL + "?sslmode=disable"
        let tables = """
            CREATE TABLE queue (queue_name varchar(255) PRIMARY KEY, created_on timestamp default current_timestamp);
            CREATE TABLE queue_message (created_on timestamp not null default current_timestamp,
              deliver_on timestamp default current_timestamp, queue_name varchar(255) not null,
              message_id varchar(255) not null, priority integer default 0, popped boolean default false,
              offset_time_seconds bigint, payload text, PRIMARY KEY (queue_name, message_id));
            """
        let script = """
            import sys, time, psycopg
            url, n, batch, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
            with psycopg.connect(url, autocommit=True) as c:
                c.execute(sys.argv[5])
            body = '"' + "x" * (size - 2) + '"'
            with psycopg.connect(url) as c:
                t = time.monotonic()
                for start in range(0, n, batch):
                    with c.transaction():
                        with c.cursor() as cur:
                            cur.execute("INSERT INTO queue (queue_name) VALUES (%s) ON CONFLICT (queue_name) DO NOTHING", ("baseline",))
                            cur.executemany(
                                "INSERT INTO queue_message (deliver_on, queue_name, message_id, priority, offset_time_seconds, popped, payload) "
                                "VALUES (current_timestamp, %s, %s, %s, 0, false, %s) "
                                "ON CONFLICT (queue_name, message_id) DO UPDATE SET payload = excluded.payload, deliver_on = excluded.deliver_on",
                                [("baseline", "b-%d" % i, 0, body) for i in range(start, min(n, start + batch))])
                print(n / (time.monotonic() - t))
            """
        let baseline = try pythonFigures(
            script, [url, "\(messages)", "\(batchSize)", "\(payloadBytes)", tables],
            failure: "the psycopg baseline failed (pip install 'psycopg[binary]')")[0]
        say(
            "baseline  psycopg executemany upsert, \(messages) rows of \(payloadBytes) B, \(batchSize) per transaction: \(format(baseline)) rows/s"
        )

        let config = try writeBenchConfig(
            dir: dir,
            sinks:
                #"{conductor: {postgres: {url: "\#(sinkdURL)", sslmode: disable}, pool_size: \#(poolSize), max_in_flight: \#(poolSize), batch_size: \#(batchSize)}}"#
        )
        let daemon = try startBenchDaemon(config: config, socket: dir + "/ingest.sock")
        defer {
            daemon.terminate()
            daemon.waitUntilExit()
        }
        let total = (messages / connections) * connections
        let waiter = Process()
        waiter.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        // Waits cheaply: first for each client's last id (index lookups every 10 ms; a
        // count(*) that often would load the server being measured), then for the full count.
        let lastIDs = (0..<connections).map { "c\($0)-\(messages / connections - 1)" }
        waiter.arguments = [
            "python3", "-c",
            """
            import sys, time, psycopg
            last, total = sys.argv[2].split(","), int(sys.argv[3])
            with psycopg.connect(sys.argv[1], autocommit=True) as c:
                while c.execute("SELECT count(*) FROM queue_message WHERE queue_name = 'bench:e2e' AND message_id = ANY(%s)", (last,)).fetchone()[0] < len(last):
                    time.sleep(0.01)
                while c.execute("SELECT count(*) FROM queue_message WHERE queue_name = 'bench:e2e'").fetchone()[0] < total:
                    time.sleep(0.01)
            """, url, lastIDs.joined(separator: ","), "\(total)",
        ]
        let sampler = RSSSampler(pid: daemon.processIdentifier)
        let t0 = monotonicSeconds()
        try waiter.run()
        // conductor:e2e for workflowType "bench" → DAO queue bench:e2e.
        sendThroughClients(
            socket: dir + "/ingest.sock", connections: connections, total: messages, prefix: "c",
            payloadBytes: payloadBytes,
            sink: "conductor:e2e", workflowType: "bench", taskRefName: "t")
        waiter.waitUntilExit()
        let rate = Double(total) / (monotonicSeconds() - t0)
        say(
            "e2e       \(connections) connections, \(total) records of \(payloadBytes) B, fsync always, socket → WAL → one transaction per batch of \(batchSize) (pool_size \(poolSize)):"
        )
        say(
            "          \(format(rate)) rows/s in queue_message (\(format(rate / baseline))× psycopg); sinkd peak RSS \(format(Double(sampler.stop()) / 1024)) MiB"
        )

        // Delivery alone: the table is hidden (the sink pauses: "tables missing"), the records
        // pile up in the WAL, the table comes back, the drain is timed from its first row.
        try psql(url, "ALTER TABLE queue_message RENAME TO queue_message_hidden")
        sendThroughClients(
            socket: dir + "/ingest.sock", connections: connections, total: messages, prefix: "d",
            payloadBytes: payloadBytes,
            sink: "conductor:drain", workflowType: "bench", taskRefName: "t")
        usleep(500_000)
        try psql(url, "ALTER TABLE queue_message_hidden RENAME TO queue_message")
        let drained = try psql(
            url,
            """
            import time
            while c.execute("SELECT count(*) FROM queue_message WHERE queue_name = 'bench:drain'").fetchone()[0] == 0:
                time.sleep(0.005)
            t = time.monotonic()
            first = c.execute("SELECT count(*) FROM queue_message WHERE queue_name = 'bench:drain'").fetchone()[0]
            while c.execute("SELECT count(*) FROM queue_message WHERE queue_name = 'bench:drain'").fetchone()[0] < \(total):
                time.sleep(0.05)
            print(int((\(total) - first) / (time.monotonic() - t)))
            """, script: true)
        say(
            "drain     \(total) records accepted while the table was missing, then delivered alone: \(drained.trimmingCharacters(in: .whitespacesAndNewlines)) rows/s (\(format((Double(drained.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) / baseline))× psycopg)"
        )
    }

    /// Runs one SQL statement (or, with `script`, Python code given a connection `c`) with psycopg.
    @discardableResult
    private func psql(_ url: String, _ text: String, script: Bool = false) throws -> String {
        let code =
            script
            ? "import sys, psycopg\nwith psycopg.connect(sys.argv[1], autocommit=True) as c:\n"
                + text.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n")
            : "import sys, psycopg\nwith psycopg.connect(sys.argv[1], autocommit=True) as c:\n    c.execute(sys.argv[2])"
        do {
            return try Python.run(["-c", code, url, text])
        } catch {
            throw ValidationError("psycopg failed: \(text.prefix(60)): \(error)")
        }
    }
}
