import ArgumentParser
import Foundation
import SinkdCore
import SinkdIngest
import SinkdSQSSink
import SinkdWAL

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

/// `sinkd-bench sqs`: socket → WAL (fsync always) → SendMessageBatch into a standard queue of a
/// private moto server, beside boto3 sending the same messages with SendMessageBatch sequentially
/// from Python against the same server, in the same run.
struct BenchSQS: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sqs",
        abstract:
            "End-to-end messages/s into SQS, beside boto3's sequential SendMessageBatch: against moto, then against an endpoint that answers at once.",
        discussion:
            "Needs moto_server and boto3 (scripts/test installs them). Against moto both clients wait for moto's Python; the instant endpoint shows what each client costs itself."
    )

    @Option(help: "Where sinkd's WAL is written.") var directory = ".sinkd-bench"
    @Option(help: "Messages per run against moto (slow: about 8 ms of Python per 1 KiB message).") var messages = 1000
    @Option(help: "Messages per run against the instant endpoint.") var instantMessages = 50_000
    @Option(help: "Payload bytes per message.") var payloadBytes = 1024
    @Option(help: "Client connections to sinkd.") var connections = 4

    func run() throws {
        let dir = try freshBenchDirectory(directory)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // 1. Against moto: a real SQS implementation, but slow (Python): both clients wait for it.
        let moto = try MotoProcess()
        let endpoint = moto.endpoint
        var sqs = SQSSinkConfig()
        sqs.endpoint = endpoint
        sqs.accessKeyID = "bench"
        sqs.secretAccessKey = "bench"
        sqs.region = "us-east-1"
        let counter = SQSSinkFamily(config: sqs, environment: [:])
        defer { BlockingAsync.run { await counter.shutdown() } }
        let ready = Date().addingTimeInterval(30)
        while BlockingAsync.run({ try? await counter.approximateMessages(queue: "probe", create: true) }) == nil {
            guard Date() < ready else {
                throw ValidationError("moto_server did not start (pip install 'moto[server]')")
            }
            usleep(100_000)
        }
        try compare(label: "moto", endpoint: endpoint, messages: messages, dir: dir + "/moto") {
            BlockingAsync.run { (try? await counter.approximateMessages(queue: "e2e", create: false)) ?? 0 }
        }

        // 2. Against an endpoint that answers at once: what each client itself costs.
        let (instant, instantPort) = try InstantSQSEndpoint.start()
        defer { try? instant.close().wait() }
        try compare(
            label: "instant", endpoint: "http://127.0.0.1:\(instantPort)", messages: instantMessages,
            dir: dir + "/instant"
        ) {
            InstantSQSEndpoint.delivered.load(ordering: .relaxed)
        }
    }

    /// boto3's sequential SendMessageBatch, then sinkd end to end, against `endpoint`.
    private func compare(label: String, endpoint: String, messages: Int, dir: String, delivered: () -> Int) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let script = """
            import boto3, sys, time
            c = boto3.client("sqs", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench")
            url = c.create_queue(QueueName="baseline")["QueueUrl"]
            n, size = int(sys.argv[2]), int(sys.argv[3])
            body = "x" * size
            t = time.monotonic()
            for i in range(0, n, 10):
                c.send_message_batch(QueueUrl=url, Entries=[{"Id": str(k), "MessageBody": body} for k in range(min(10, n - i))])
            print(n / (time.monotonic() - t))
            """
        let baseline = try pythonFigures(
            script, [endpoint, "\(messages)", "\(payloadBytes)"],
            failure: "the boto3 baseline failed (pip install boto3)"
        )[0]
        say(
            "\(label): baseline  boto3 send_message_batch (10 per call, sequential), \(messages) messages of \(payloadBytes) B: \(format(baseline)) messages/s"
        )

        let config = try writeBenchConfig(
            dir: dir,
            sinks:
                #"{sqs: {endpoint: "\#(endpoint)", region: us-east-1, access_key_id: bench, secret_access_key: bench, create_missing_queues: true, pool_size: 8, max_in_flight: 16}}"#
        )
        let daemon = try startBenchDaemon(config: config, socket: dir + "/ingest.sock")
        defer {
            daemon.terminate()
            daemon.waitUntilExit()
        }
        let sampler = RSSSampler(pid: daemon.processIdentifier)
        let before = delivered()
        let t0 = monotonicSeconds()
        let group = DispatchGroup()
        for c in 0..<connections {
            group.enter()
            BlockingThread.detach { [payloadBytes, messages, connections] in
                _ = try? runBenchClient(
                    socket: dir + "/ingest.sock", prefix: "s\(c)-", count: messages / connections, rate: 0,
                    payloadBytes: payloadBytes, window: 500, sink: "sqs:e2e")
                group.leave()
            }
        }
        group.wait()
        let total = (messages / connections) * connections
        while delivered() - before < total { usleep(20_000) }
        let rate = Double(total) / (monotonicSeconds() - t0)
        say(
            "\(label): e2e       \(connections) connections, \(total) records of \(payloadBytes) B, fsync always, socket → WAL → SendMessageBatch:"
        )
        say(
            "\(label):           \(format(rate)) messages/s delivered (\(format(rate / baseline))× boto3); sinkd peak RSS \(format(Double(sampler.stop()) / 1024)) MiB"
        )
    }
}

/// Runs async work from synchronous benchmark code (a thread of its own waits).
enum BlockingAsync {
    static func run<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        Task {
            box.value = await body()
            done.signal()
        }
        done.wait()
        return box.value!
    }

    final class ResultBox<T>: @unchecked Sendable {
        var value: T?
    }
}
