import ArgumentParser
import Foundation
import SinkdIngest
import SinkdWAL

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

/// `sinkd-bench amqp`: socket → WAL (fsync always) → basic.publish with confirms into a durable
/// queue of a private RabbitMQ node, beside aio-pika publishing the same persistent messages with
/// confirms and the same in-flight window, in the same run.
struct BenchAMQP: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "amqp",
        abstract: "End-to-end persistent messages/s with confirms into a durable RabbitMQ queue, beside aio-pika.",
        discussion:
            "Needs rabbitmq-server (Debian) and aio-pika and pika (PyPI). Starts its own RabbitMQ node on free 127.0.0.1 ports."
    )

    @Option(help: "Where sinkd's WAL and the node's data are written.") var directory = ".sinkd-bench"
    @Option(help: "Messages per client (aio-pika and sinkd).") var messages = 100_000
    @Option(help: "Payload bytes per message.") var payloadBytes = 1024
    @Option(help: "Unconfirmed messages allowed (both clients): sinkd's pool_size × max_in_flight.") var window = 1000
    @Option(help: "sinkd's batch_size.") var batchSize = 100
    @Option(help: "Client connections to sinkd.") var connections = 4
    @Option(help: "sinkd's pool_size (channels per sink); max_in_flight = window / pool_size.") var poolSize = 2

    func run() throws {
        let dir = try freshBenchDirectory(directory)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let node = try RabbitMQProcess(directory: dir + "/rabbitmq")
        defer { node.kill() }
        let url = node.url

        let baselineScript = """
            import asyncio, sys, time, aio_pika
            async def main():
                connection = await aio_pika.connect_robust(sys.argv[1])
                channel = await connection.channel(publisher_confirms=True)
                await channel.declare_queue("baseline", durable=True)
                n, window, body = int(sys.argv[2]), int(sys.argv[3]), b"x" * int(sys.argv[4])
                limit = asyncio.Semaphore(window)
                async def one(i):
                    async with limit:
                        await channel.default_exchange.publish(
                            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id="b-%d" % i,
                                             content_type="application/json"), routing_key="baseline", mandatory=True)
                t = time.monotonic()
                await asyncio.gather(*(one(i) for i in range(n)))
                print(n / (time.monotonic() - t))
                await connection.close()
            asyncio.run(main())
            """
        let baseline = try pythonFigures(
            baselineScript, [url, "\(messages)", "\(window)", "\(payloadBytes)"],
            failure: "the aio-pika baseline failed (pip install aio-pika)")[0]
        say(
            "baseline  aio-pika, \(messages) persistent messages of \(payloadBytes) B, confirms, \(window) unconfirmed at most: \(format(baseline)) messages/s"
        )

        let config = try writeBenchConfig(
            dir: dir,
            sinks:
                #"{amqp: {urls: ["\#(url)"], pool_size: \#(poolSize), max_in_flight: \#(window / poolSize), batch_size: \#(batchSize)}}"#
        )
        let daemon = try startBenchDaemon(config: config, socket: dir + "/ingest.sock")
        defer {
            daemon.terminate()
            daemon.waitUntilExit()
        }
        // The waiter declares the queue, then polls its depth every 20 ms until all arrived.
        let total = (messages / connections) * connections
        let waiterScript = """
            import sys, time, pika
            c = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
            ch = c.channel()
            ch.queue_declare("e2e", durable=True)
            print("ready", flush=True)
            while ch.queue_declare("e2e", passive=True).method.message_count < int(sys.argv[2]):
                time.sleep(0.02)
            print("done", flush=True)
            """
        let waiter = Process()
        waiter.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        waiter.arguments = ["python3", "-c", waiterScript, url, "\(total)"]
        let out = Pipe()
        waiter.standardOutput = out
        try waiter.run()
        var line = Data()
        while !String(decoding: line, as: UTF8.self).contains("ready") {
            let chunk = out.fileHandleForReading.availableData
            guard !chunk.isEmpty else { throw ValidationError("the pika queue waiter failed (pip install pika)") }
            line.append(chunk)
        }
        let sampler = RSSSampler(pid: daemon.processIdentifier)
        let t0 = monotonicSeconds()
        sendThroughClients(
            socket: dir + "/ingest.sock", connections: connections, total: messages, prefix: "a",
            payloadBytes: payloadBytes, sink: "amqp_queue:e2e")
        waiter.waitUntilExit()
        let rate = Double(total) / (monotonicSeconds() - t0)
        say(
            "e2e       \(connections) connections, \(total) records of \(payloadBytes) B, fsync always, socket → WAL → basic.publish → confirm (pool_size \(poolSize) × max_in_flight \(window / poolSize), batch_size \(batchSize)):"
        )
        say(
            "          \(format(rate)) messages/s in the queue (\(format(rate / baseline))× aio-pika); sinkd peak RSS \(format(Double(sampler.stop()) / 1024)) MiB"
        )
    }
}
