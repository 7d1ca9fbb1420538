import ArgumentParser
import Foundation
import SinkdIngest
import SinkdWAL

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

/// `sinkd-bench`: the benchmarks, an executable of their own that the package does not install.
/// Each starts the `sinkd` beside it (or --sinkd / $SINKD_BINARY) on a configuration of its own.
@main
struct SinkdBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sinkd-bench",
        abstract: "Measure sinkd on this machine; prints figures beside a baseline measured in the same run.",
        discussion: """
            Every benchmark starts the sinkd executable that sits beside sinkd-bench (as swift build \
            leaves them), or the one $SINKD_BINARY names (the package's binary, to measure what is \
            installed). README.md, Performance, has the figures and the commands.
            """,
        subcommands: [
            BenchPaced.self, BenchIngest.self, BenchRedis.self, BenchSQS.self, BenchNATS.self, BenchAMQP.self,
            BenchConductor.self, BenchKafka.self,
        ]
    )
}

/// `sinkd-bench ingest`: socket → WAL with fsync=always, beside the disk's own sequential
/// write bandwidth with fdatasync (dd) on the same filesystem.
struct BenchIngest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest",
        abstract: "Ingest throughput and acknowledgement latency, beside dd's fdatasync bandwidth.",
        discussion: """
            Starts `sinkd run` on a temporary configuration whose WAL lives in --directory, then: \
            (1) dd writes 1 GiB with conv=fdatasync there (the baseline); (2) --connections \
            clients pipeline --records records of --payload-bytes as fast as sinkd acknowledges \
            them; (3) one client sends at a steady --steady-rate for --steady-seconds. Prints \
            records/s, MiB/s, p50/p99 acknowledgement latency, sinkd's CPU and peak RSS.
            """
    )

    @Option(help: "Where the WAL is written (its filesystem is what is measured).")
    var directory = ".sinkd-bench"

    @Option(help: "Client connections for the throughput phase.")
    var connections = 4

    @Option(help: "Records in the throughput phase.")
    var records = 400_000

    @Option(help: "Payload bytes per record.")
    var payloadBytes = 1024

    @Option(help: "Records per second in the steady phase (0 skips it).")
    var steadyRate = 20_000

    @Option(help: "Seconds of the steady phase.")
    var steadySeconds = 5

    @Option(help: "Unacknowledged records a client allows itself.")
    var window = 500

    @Option(
        help:
            "If > 0: after the steady phase, this many live sinks, then the steady phase again while /metrics is scraped every 100 ms (its p99 beside the first)."
    )
    var scrapeSinks = 0

    func run() throws {
        let dir = try freshBenchDirectory(directory)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let dd = try ddBandwidth(dir)
        say("baseline  dd bs=1M count=1024 conv=fdatasync: \(format(dd / 1_048_576)) MiB/s on \(dir)")

        let metricsPort = scrapeSinks > 0 ? LoopbackTCP.freePort() : 0
        let config = try writeBenchConfig(
            dir: dir, sinks: "{file: {directory: \(dir)/outbox}}",
            extra: scrapeSinks > 0 ? "metrics: {listen: \"127.0.0.1:\(metricsPort)\"}" : "")
        let daemon = try startBenchDaemon(config: config, socket: dir + "/ingest.sock")
        defer {
            daemon.terminate()
            daemon.waitUntilExit()
        }
        let socket = dir + "/ingest.sock"
        let pid = daemon.processIdentifier
        let sampler = RSSSampler(pid: pid)

        // Throughput.
        let cpuBefore = cpuSeconds(pid)
        let clientCPUBefore = cpuSeconds(getpid())
        let started = Date()
        let perConnection = records / connections
        let collected = LatencyCollector()
        let group = DispatchGroup()
        for c in 0..<connections {
            group.enter()
            BlockingThread.detach {
                collected.add(
                    (try? runBenchClient(
                        socket: socket, prefix: "c\(c)-", count: perConnection, rate: 0, payloadBytes: payloadBytes,
                        window: window)) ?? [])
                group.leave()
            }
        }
        group.wait()
        let latencies = collected.all
        let elapsed = Date().timeIntervalSince(started)
        let cpu = cpuSeconds(pid) - cpuBefore
        let clientCPU = cpuSeconds(getpid()) - clientCPUBefore
        let all = latencies.flatMap { $0 }.sorted()
        let total = all.count
        let rate = Double(total) / elapsed
        let mib = rate * Double(payloadBytes) / 1_048_576
        say("ingest    \(connections) connections, \(total) records of \(payloadBytes) B, fsync always:")
        say(
            "          \(format(rate)) records/s, \(format(mib)) MiB/s of payload (\(format(100 * mib * 1_048_576 / dd)) % of dd)"
        )
        say(
            "          ack latency p50 \(format(percentile(all, 0.50) * 1000)) ms, p99 \(format(percentile(all, 0.99) * 1000)) ms"
        )
        say(
            "          sinkd CPU \(format(100 * cpu / elapsed)) % of one core; the load client's (this process) \(format(100 * clientCPU / elapsed)) %"
        )

        if steadyRate > 0 {
            let steady =
                (try? runBenchClient(
                    socket: socket, prefix: "s-", count: steadyRate * steadySeconds, rate: steadyRate,
                    payloadBytes: payloadBytes, window: window)) ?? []
            let sorted = steady.sorted()
            say(
                "steady    \(steadyRate) records/s for \(steadySeconds) s: ack latency p50 \(format(percentile(sorted, 0.50) * 1000)) ms, p99 \(format(percentile(sorted, 0.99) * 1000)) ms, max \(format((sorted.last ?? 0) * 1000)) ms"
            )
        }
        if scrapeSinks > 0, steadyRate > 0 {
            // Many live sinks (one record each; their pipelines stay for idle_timeout), then the
            // same steady phase again while a scraper fetches /metrics every 100 ms.
            _ = try? runBenchClient(
                socket: socket, prefix: "k-", count: scrapeSinks, rate: 0, payloadBytes: 16, window: window,
                sinkForIndex: { "file:scrape\($0)" })
            let quiet =
                ((try? runBenchClient(
                    socket: socket, prefix: "q-", count: steadyRate * steadySeconds, rate: steadyRate,
                    payloadBytes: payloadBytes, window: window)) ?? []).sorted()
            let scraper = MetricsScraper(port: metricsPort)
            let scraped =
                ((try? runBenchClient(
                    socket: socket, prefix: "m-", count: steadyRate * steadySeconds, rate: steadyRate,
                    payloadBytes: payloadBytes, window: window)) ?? []).sorted()
            let (scrapes, bytes, slowest) = scraper.stop()
            // And once more without: the first quiet phase overlaps the new sinks' first deliveries.
            let after =
                ((try? runBenchClient(
                    socket: socket, prefix: "a-", count: steadyRate * steadySeconds, rate: steadyRate,
                    payloadBytes: payloadBytes, window: window)) ?? []).sorted()
            say(
                "scrape    \(scrapeSinks) live sinks, steady \(steadyRate) records/s: ack p99 \(format(percentile(quiet, 0.99) * 1000)) ms without scraping, "
                    + "\(format(percentile(scraped, 0.99) * 1000)) ms with /metrics every 100 ms (\(scrapes) scrapes of \(bytes / max(1, scrapes)) B, slowest \(format(slowest * 1000)) ms), "
                    + "\(format(percentile(after, 0.99) * 1000)) ms without again")
        }
        say("memory    sinkd peak RSS \(format(Double(sampler.stop()) / 1024)) MiB")
    }

    private func ddBandwidth(_ dir: String) throws -> Double {
        let dd = Process()
        dd.executableURL = URL(fileURLWithPath: "/bin/dd")
        dd.arguments = ["if=/dev/zero", "of=\(dir)/dd.tmp", "bs=1M", "count=1024", "conv=fdatasync"]
        dd.standardError = FileHandle.nullDevice
        sync()  // earlier dirty pages must not be flushed on dd's clock, nor dd's on ours
        let started = monotonicSeconds()
        try dd.run()
        dd.waitUntilExit()
        let seconds = monotonicSeconds() - started
        try? FileManager.default.removeItem(atPath: dir + "/dd.tmp")
        sync()
        return Double(1024 << 20) / seconds
    }
}

/// One connection: a writer thread sends `count` records (at `rate`/s, or as fast as the
/// window allows), this thread reads the acknowledgements; returns each record's latency (s).
func runBenchClient(
    socket: String, prefix: String, count: Int, rate: Int, payloadBytes: Int, window: Int, sink: String = "file:bench",
    workflowType: String? = nil, taskRefName: String? = nil, sinkForIndex: ((Int) -> String)? = nil
) throws -> [Double] {
    let client = try IngestClient(path: socket)
    let sentAt = UnsafeMutableBufferPointer<Double>.allocate(capacity: count)
    defer { sentAt.deallocate() }
    let acknowledged = ManagedCounter()
    let pad = String(repeating: "x", count: max(0, payloadBytes - 12))
    // The request bytes are prepared once, so that the client spends its CPU on sending.
    let head = Array(#"{"id":"\#(prefix)"#.utf8)
    let context =
        (workflowType.map { #","workflowType":"\#($0)""# } ?? "")
        + (taskRefName.map { #","taskRefName":"\#($0)""# } ?? "")
    let tail = Array(#"","sink":"\#(sink)"\#(context),"payload":{"d":"\#(pad)"}}"#.utf8) + [UInt8(ascii: "\n")]
    let tails: [[UInt8]]? = sinkForIndex.map { name in
        (0..<count).map {
            Array(#"","sink":"\#(name($0))"\#(context),"payload":{"d":"\#(pad)"}}"#.utf8) + [UInt8(ascii: "\n")]
        }
    }
    BlockingThread.detach { [sentAt = UncheckedBox(sentAt)] in
        var chunk: [UInt8] = []
        chunk.reserveCapacity(64 << 10)
        let start = monotonicSeconds()
        for i in 0..<count {
            if rate > 0 {
                let due = start + Double(i) / Double(rate)
                let now = monotonicSeconds()
                if due > now {
                    if !chunk.isEmpty {
                        _ = client.write(chunk)
                        chunk.removeAll(keepingCapacity: true)
                    }
                    usleep(useconds_t((due - now) * 1_000_000))
                }
            } else {
                while i - acknowledged.value >= window {
                    if !chunk.isEmpty {
                        _ = client.write(chunk)
                        chunk.removeAll(keepingCapacity: true)
                    }
                    usleep(50)
                }
            }
            chunk += head
            appendDecimal(i, to: &chunk)
            chunk += tails?[i] ?? tail
            sentAt.value[i] = monotonicSeconds()
            if chunk.count >= 32 << 10 || rate > 0 {
                _ = client.write(chunk)
                chunk.removeAll(keepingCapacity: true)
            }
        }
        _ = client.write(chunk)
    }
    var latencies: [Double] = []
    latencies.reserveCapacity(count)
    while latencies.count < count, let line = client.readLine(timeoutMillis: 60_000) {
        guard line.count > 20 else { continue }
        latencies.append(monotonicSeconds() - sentAt[latencies.count])
        acknowledged.value = latencies.count
    }
    return latencies
}

private func appendDecimal(_ value: Int, to out: inout [UInt8]) {
    if value >= 10 { appendDecimal(value / 10, to: &out) }
    out.append(UInt8(ascii: "0") + UInt8(value % 10))
}

/// `total` records of `payloadBytes` to `sink` over `connections` pipelining clients (ids
/// `<prefix><client>-<n>`); returns once every one was answered.
func sendThroughClients(
    socket: String, connections: Int, total: Int, prefix: String, payloadBytes: Int, sink: String,
    workflowType: String? = nil, taskRefName: String? = nil
) {
    let group = DispatchGroup()
    for c in 0..<connections {
        group.enter()
        BlockingThread.detach {
            _ = try? runBenchClient(
                socket: socket, prefix: "\(prefix)\(c)-", count: total / connections, rate: 0,
                payloadBytes: payloadBytes,
                window: 500, sink: sink, workflowType: workflowType, taskRefName: taskRefName)
            group.leave()
        }
    }
    group.wait()
}

/// The benchmarks' configuration: everything under `dir`, fsync always, the given `sinks:` section.
/// `directory` as an absolute path, emptied and created: each benchmark starts from nothing.
func freshBenchDirectory(_ directory: String) throws -> String {
    let dir = URL(fileURLWithPath: directory).standardizedFileURL.path
    try? FileManager.default.removeItem(atPath: dir)
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

func writeBenchConfig(dir: String, sinks: String, extra: String = "") throws -> String {
    let config = dir + "/sinkd.yaml"
    try """
    ingest: {socket: \(dir)/ingest.sock, max_connections: 4096}
    control: {socket: \(dir)/control.sock}
    wal: {directory: \(dir)/wal, segment_size: 64MiB, max_size: 50GiB, fsync: always}
    log: {level: warning, format: logfmt}
    sinks: \(sinks)
    \(extra)
    """.write(toFile: config, atomically: true, encoding: .utf8)
    return config
}

/// `sinkd run` on `config`, once its ingest socket accepts.
func startBenchDaemon(config: String, socket: String, environment: [String: String] = [:]) throws -> Process {
    let daemon = Process()
    if !environment.isEmpty {
        daemon.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    daemon.executableURL = URL(fileURLWithPath: sinkdBinary())
    daemon.arguments = ["run", "--config", config]
    try daemon.run()
    let deadline = Date().addingTimeInterval(30)
    while (try? IngestClient(path: socket)) == nil {
        guard Date() < deadline, daemon.isRunning else { throw ValidationError("sinkd did not start") }
        usleep(20_000)
    }
    return daemon
}

/// The daemon the benchmarks measure: $SINKD_BINARY, else the `sinkd` beside this executable.
func sinkdBinary() -> String {
    if let path = ProcessInfo.processInfo.environment["SINKD_BINARY"], !path.isEmpty { return path }
    return URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("sinkd").path
}

/// A baseline client's figures: runs `python3 -c script arguments...`, which prints numbers
/// separated by spaces; throws `failure` (what to install) when it fails or prints fewer than
/// `count` of them.
func pythonFigures(_ script: String, _ arguments: [String], count: Int = 1, failure: String) throws -> [Double] {
    let printed: String
    do {
        printed = try Python.run(["-c", script] + arguments)
    } catch {
        throw ValidationError("\(failure): \(error)")
    }
    let figures = printed.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { Double($0) }
    guard figures.count >= count else { throw ValidationError("\(failure): it printed \(printed.prefix(200))") }
    return figures
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

func format(_ v: Double) -> String {
    v >= 100 ? String(Int(v.rounded())) : String(format: "%.2f", v)
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// utime + stime of a process, in seconds.
func cpuSeconds(_ pid: Int32) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return 0 }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 13, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
    return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// Samples a process's resident set every 50 ms; `stop()` returns the peak in KiB.
final class RSSSampler: @unchecked Sendable {
    private let lock = NSLock()
    private var peak = 0
    private var running = true

    init(pid: Int32) {
        BlockingThread.detach { [self] in
            while lock.withLock({ running }) {
                if let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
                    let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
                    let kib = Int(line.split(separator: " ").dropFirst().first ?? "")
                {
                    lock.withLock { peak = max(peak, kib) }
                }
                usleep(50_000)
            }
        }
    }

    func stop() -> Int {
        lock.withLock {
            running = false
            return peak
        }
    }
}

final class LatencyCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [[Double]] = []
    func add(_ v: [Double]) { lock.withLock { values.append(v) } }
    var all: [[Double]] { lock.withLock { values } }
}

private final class ManagedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int {
        get { lock.withLock { count } }
        set { lock.withLock { count = newValue } }
    }
}

private struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// One line on stdout at once (unbuffered), so that figures appear as they are measured.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// Fetches `GET /metrics` every 100 ms on a thread of its own until stopped.
final class MetricsScraper: @unchecked Sendable {
    private let lock = NSLock()
    private var running = true
    private var scrapes = 0
    private var bytes = 0
    private var slowest = 0.0
    private let done = DispatchSemaphore(value: 0)

    init(port: Int) {
        BlockingThread.detach { [self] in
            while lock.withLock({ running }) {
                let started = monotonicSeconds()
                let n = Self.fetch(port: port)
                let took = monotonicSeconds() - started
                lock.withLock {
                    scrapes += 1
                    bytes += n
                    slowest = max(slowest, took)
                }
                usleep(useconds_t(max(0, 0.1 - took) * 1_000_000))
            }
            done.signal()
        }
    }

    func stop() -> (scrapes: Int, bytes: Int, slowest: Double) {
        lock.withLock { running = false }
        done.wait()
        return lock.withLock { (scrapes, bytes, slowest) }
    }

    /// One GET; the bytes of the response body.
    static func fetch(port: Int) -> Int {
        LoopbackTCP.get(port: port, path: "/metrics").body.utf8.count
    }
}
