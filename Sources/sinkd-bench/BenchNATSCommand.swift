import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import SinkdCore
import SinkdIngest
import SinkdNATSSink
import SinkdWAL

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

/// `sinkd-bench nats`: socket → WAL (fsync always) → a private nats-server with JetStream, beside
/// nats-py's async JetStream publish with the same in-flight window in the same run; then core
/// NATS end to end, and the drain of a backlog accepted while the server was down.
struct BenchNATS: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nats",
        abstract: "End-to-end messages/s into JetStream (beside nats-py's publish_async) and core NATS.",
        discussion: "Needs nats-server (Debian) and nats-py (PyPI); scripts/test installs both."
    )

    @Option(help: "Where sinkd's WAL and the server's store are written.") var directory = ".sinkd-bench"
    @Option(help: "JetStream messages per client (nats-py and sinkd).") var jsmMessages = 100_000
    @Option(help: "Core NATS messages end to end.") var coreMessages = 400_000
    @Option(help: "Payload bytes per message.") var payloadBytes = 1024
    @Option(help: "Unacknowledged JetStream publishes allowed (both clients): max_in_flight.") var window = 256
    @Option(help: "Client connections to sinkd.") var connections = 4
    @Option(help: "sinkd's batch_size (max_in_flight / batch_size batches are outstanding).") var batchSize = 64

    func run() throws {
        let dir = try freshBenchDirectory(directory)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try NATSProcess(directory: dir + "/nats")
        var adminConfig = NATSSinkConfig()
        adminConfig.servers = [server.url]
        let admin = adminConfig
        let subscriber = CountingSubscriber()
        let tools = try BlockingAsync.run { () -> Result<NATSAdmin, Error> in
            do {
                let a = try await NATSAdmin.connect(admin) { _, _ in subscriber.increment() }
                try await a.createStream("BASELINE", subjects: ["baseline"])
                try await a.createStream("E2E", subjects: ["e2e"])
                try await a.subscribe("core")
                return .success(a)
            } catch {
                return .failure(error)
            }
        }.get()
        defer { BlockingAsync.run { await tools.close() } }

        // Baseline: nats-py, JetStream publish_async with Nats-Msg-Id, `window` pending at most.
        let script = """
            import asyncio, sys, time, nats
            async def main():
                nc = await nats.connect(sys.argv[1])
                js = nc.jetstream(publish_async_max_pending=int(sys.argv[3]))
                n, body = int(sys.argv[2]), b"x" * int(sys.argv[4])
                t = time.monotonic()
                for i in range(n):
                    await js.publish_async("baseline", body, headers={"Nats-Msg-Id": "b-%d" % i})
                await js.publish_async_completed()
                print(n / (time.monotonic() - t))
                await nc.close()
            asyncio.run(main())
            """
        let baseline = try pythonFigures(
            script, [server.url, "\(jsmMessages)", "\(window)", "\(payloadBytes)"],
            failure: "the nats-py baseline failed (pip install nats-py)")[0]
        say(
            "baseline  nats-py publish_async, \(jsmMessages) messages of \(payloadBytes) B, \(window) pending at most: \(format(baseline)) messages/s"
        )

        let config = try writeBenchConfig(
            dir: dir,
            sinks:
                #"{nats: {servers: ["\#(server.url)"], jsm: {subject_prefix: ""}, pool_size: 1, max_in_flight: \#(window), batch_size: \#(batchSize)}}"#
        )
        let daemon = try startBenchDaemon(config: config, socket: dir + "/ingest.sock")
        defer {
            daemon.terminate()
            daemon.waitUntilExit()
        }
        // JetStream end to end.
        var sampler = RSSSampler(pid: daemon.processIdentifier)
        var t0 = monotonicSeconds()
        sendThroughClients(
            socket: dir + "/ingest.sock", connections: connections, total: jsmMessages, prefix: "j",
            payloadBytes: payloadBytes, sink: "jsm:e2e")
        let jsmTotal = (jsmMessages / connections) * connections
        while BlockingAsync.run({ (try? await tools.streamMessageCount("E2E")) ?? 0 }) < jsmTotal { usleep(20_000) }
        let jsmRate = Double(jsmTotal) / (monotonicSeconds() - t0)
        say(
            "jsm e2e   \(connections) connections, \(jsmTotal) records of \(payloadBytes) B, fsync always, socket → WAL → HPUB → PubAck (max_in_flight \(window)):"
        )
        say(
            "          \(format(jsmRate)) messages/s stored (\(format(jsmRate / baseline))× nats-py); sinkd peak RSS \(format(Double(sampler.stop()) / 1024)) MiB"
        )

        // Core NATS end to end (a batch counts once its PING is answered).
        sampler = RSSSampler(pid: daemon.processIdentifier)
        t0 = monotonicSeconds()
        sendThroughClients(
            socket: dir + "/ingest.sock", connections: connections, total: coreMessages, prefix: "c",
            payloadBytes: payloadBytes, sink: "nats:core")
        let coreTotal = (coreMessages / connections) * connections
        while subscriber.value < coreTotal { usleep(10_000) }
        let coreRate = Double(coreTotal) / (monotonicSeconds() - t0)
        say(
            "core e2e  \(connections) connections, \(coreTotal) records of \(payloadBytes) B, fsync always, socket → WAL → PUB + PING/PONG:"
        )
        say(
            "          \(format(coreRate)) messages/s received by a subscriber; sinkd peak RSS \(format(Double(sampler.stop()) / 1024)) MiB"
        )

        // Delivery alone: a backlog accepted with the server down, then drained.
        server.kill()
        sendThroughClients(
            socket: dir + "/ingest.sock", connections: connections, total: coreMessages, prefix: "d",
            payloadBytes: payloadBytes, sink: "nats:drain")
        try server.start()
        let counter = CountingSubscriber()
        let drainTools = try BlockingAsync.run { () -> Result<NATSAdmin, Error> in
            do {
                let a = try await NATSAdmin.connect(admin) { _, _ in counter.increment() }
                try await a.subscribe("drain")
                return .success(a)
            } catch {
                return .failure(error)
            }
        }.get()
        defer { BlockingAsync.run { await drainTools.close() } }
        while counter.value == 0 { usleep(5_000) }
        let d0 = monotonicSeconds()
        let first = counter.value
        while counter.value < coreTotal { usleep(10_000) }
        say(
            "core drain \(coreTotal) records accepted with nats-server down: \(format(Double(coreTotal - first) / (monotonicSeconds() - d0))) messages/s once reconnected"
        )
    }
}

final class CountingSubscriber: Sendable {
    private let count = NIOLockedValueBox(0)
    func increment() { count.withLockedValue { $0 += 1 } }
    var value: Int { count.withLockedValue { $0 } }
}
