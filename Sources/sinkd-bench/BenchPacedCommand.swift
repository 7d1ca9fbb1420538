import ArgumentParser
import Foundation
import SinkdIngest
import SinkdTestSupport
import SinkdWAL

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

/// `sinkd-bench paced`: the pace Conductor publishes at. Connections each send one record and
/// wait for its answer before the next, at an even total rate; what sinkd spends per record
/// (CPU, heap calls, context switches, system calls, fdatasyncs) beside the floor, a
/// write + fdatasync of a record's bytes at the same pace, measured in the same run.
struct BenchPaced: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "paced",
        abstract:
            "CPU, heap calls and system calls per record at a steady pace, one record at a time, beside the fdatasync floor.",
        discussion: """
            Starts a private redis-server (with --sink redis) and sinkd with Benchmarks/heapcount.c \
            preloaded. For each rate of --rates: the floor (one thread writing a record's bytes and \
            fdatasyncing them at that rate, its own CPU), then --warmup seconds unmeasured, then \
            --seconds measured: sinkd's utime+stime, heap calls and context switches over the window \
            (until every record of the window is delivered), divided by the records; system calls \
            per record with perf (a second window, when perf is installed); ack latency p50/p99. \
            With --peers, each peer (unpacked by scripts/unpack-peers) is then measured the same way \
            at the same rate into the same redis-server, its clients writing records without \
            waiting (a peer answers nothing).
            """
    )

    @Option(help: "Where sinkd's WAL is written (its filesystem is what is measured).") var directory = ".sinkd-bench"
    @Option(help: "Records per second, comma-separated: each is measured in turn.") var rates = "500,5000"
    @Option(help: "Client connections, each one record at a time.") var connections = 4
    @Option(help: "Measured seconds per rate.") var seconds = 10
    @Option(help: "Unmeasured seconds at each rate first.") var warmup = 3
    @Option(help: "Payload bytes per record.") var payloadBytes = 1024
    @Option(help: "redis (XADD to a private redis-server) or file.") var sink = "redis"
    @Flag(help: "Skip the perf window (system calls per record).") var noSyscalls = false
    @Option(
        help:
            "Other sinks with one record each first, whose pipelines stay live and idle meanwhile (as a Conductor server's many queues)."
    ) var idleSinks = 0
    @Option(help: "Peers measured beside sinkd at each rate, comma-separated: syslog-ng, rsyslog (--sink redis).")
    var peers = ""
    @Option(help: "Where scripts/unpack-peers unpacked the peers.") var peerRoot = ".sinkd-bench-peers"

    func run() throws {
        let rateList = rates.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }.filter {
            $0 > 0
        }
        guard !rateList.isEmpty else { throw ValidationError("--rates: no positive rate in \(rates)") }
        guard sink == "redis" || sink == "file" else { throw ValidationError("--sink: redis or file, not \(sink)") }
        let peerKinds = try peers.split(separator: ",").map { name in
            guard let kind = PeerDaemon.Kind(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--peers: syslog-ng or rsyslog, not \(name)")
            }
            return kind
        }
        guard peerKinds.isEmpty || sink == "redis" else { throw ValidationError("--peers needs --sink redis") }
        let dir = try freshBenchDirectory(directory)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let counter = try HeapCounter.build(into: dir)

        var redis: RedisProcess?
        var redisPort = 0
        if sink == "redis" {
            redisPort = LoopbackTCP.freePort()
            redis = try startRedisServer(port: redisPort, dir: dir)
        }
        defer {
            redis?.stop()
        }
        let sinks =
            sink == "redis"
            ? #"{redis: {url: "redis://127.0.0.1:\#(redisPort)/0"}}"#
            : "{file: {directory: \(dir)/outbox}}"
        let config = try writeBenchConfig(dir: dir, sinks: sinks)
        let socket = dir + "/ingest.sock"
        let daemon = try startBenchDaemon(config: config, socket: socket, environment: counter.environment)
        defer {
            daemon.terminate()
            daemon.waitUntilExit()
        }
        let pid = daemon.processIdentifier
        let target = sink == "redis" ? "redis:paced" : "file:paced"
        var delivered = 0
        let recordBytes = payloadBytes + 100
        say(
            "paced     \(connections) connections, each one \(payloadBytes) B record at a time, to \(target), fsync always; sinkd \(sinkdBinary())"
        )
        say("          idle RSS \(format(Double(residentKiB(pid)) / 1024)) MiB")

        if idleSinks > 0 {
            let family = sink == "redis" ? "redis" : "file"
            _ = try? runBenchClient(
                socket: socket, prefix: "idle-", count: idleSinks, rate: 0, payloadBytes: 16, window: 100,
                sinkForIndex: { "\(family):idle\($0)" })
            say("          \(idleSinks) other sinks given one record each: their pipelines are live and idle")
        }
        let peerRootPath = URL(fileURLWithPath: peerRoot).standardizedFileURL.path
        let peerDaemons = try peerKinds.map {
            try PeerDaemon.start($0, root: peerRootPath, directory: dir + "/" + $0.rawValue, redisPort: redisPort)
        }
        defer { for peer in peerDaemons { peer.stop() } }
        var peerDelivered = [Int](repeating: 0, count: peerDaemons.count)
        for rate in rateList {
            let floor = fdatasyncFloor(dir: dir, rate: rate, seconds: min(seconds, 5), bytes: recordBytes)
            say("floor     \(rate)/s, write + fdatasync of \(recordBytes) B: \(format(floor * 1e6)) µs CPU per record")

            _ = pacedClients(socket: socket, prefix: "w\(rate)-", sink: target, rate: rate, seconds: warmup)
            delivered += rate * warmup
            waitDelivered(delivered, dir: dir, port: redisPort)

            let cpu0 = cpuTimes(pid), heap0 = counter.read(), switches0 = contextSwitches(pid)
            let client0 = cpuSeconds(getpid())
            let sampler = RSSSampler(pid: pid)
            let latencies = pacedClients(
                socket: socket, prefix: "m\(rate)-", sink: target, rate: rate, seconds: seconds
            ).sorted()
            let clientCPU = cpuSeconds(getpid()) - client0
            delivered += latencies.count
            waitDelivered(delivered, dir: dir, port: redisPort)
            let cpu1 = cpuTimes(pid), heap1 = counter.read(), switches1 = contextSwitches(pid)
            let n = Double(max(1, latencies.count))
            let heap = heap1 - heap0
            let user = cpu1.user - cpu0.user, system = cpu1.system - cpu0.system
            say("at        \(rate)/s for \(seconds) s: \(latencies.count) records")
            say(
                "          sinkd CPU \(format((user + system) / n * 1e6)) µs per record (user \(format(user / n * 1e6)), system \(format(system / n * 1e6))), "
                    + "\(format(100 * (user + system) / Double(seconds))) % of a core; the client's \(format(100 * clientCPU / Double(seconds))) %"
            )
            say(
                "          heap calls \(format(Double(heap.calls) / n)) per record, \(format(Double(heap.bytes) / n)) B requested per record"
            )
            say("          context switches \(switches1.perRecord(since: switches0, records: n))")
            say(
                "          ack latency p50 \(format(percentile(latencies, 0.50) * 1000)) ms, p99 \(format(percentile(latencies, 0.99) * 1000)) ms; peak RSS \(format(Double(sampler.stop()) / 1024)) MiB"
            )

            if !noSyscalls, let perf = PerfSyscalls(pid: pid, directory: dir) {
                let counted = pacedClients(
                    socket: socket, prefix: "s\(rate)-", sink: target, rate: rate, seconds: min(seconds, 5)
                ).count
                delivered += counted
                waitDelivered(delivered, dir: dir, port: redisPort)
                let counts = perf.stop()
                let per = { (name: String) in format(Double(counts[name] ?? 0) / Double(max(1, counted))) }
                let detail = PerfSyscalls.calls.filter { (counts[$0] ?? 0) > 0 }.map { "\($0) \(per($0))" }.joined(
                    separator: ", ")
                say("          system calls \(per("total")) per record (perf, \(counted) records): \(detail)")
            }
            for (index, peer) in peerDaemons.enumerated() {
                measure(peer, rate: rate, delivered: &peerDelivered[index], port: redisPort, dir: dir)
            }
        }
    }

    /// A peer at `rate`: warm-up, then the measured window (its CPU and context switches until
    /// every record of the window is in redis), then its system calls in a second window.
    private func measure(_ peer: PeerDaemon, rate: Int, delivered: inout Int, port: Int, dir: String) {
        let name = peer.kind.rawValue
        func waitPeer(_ count: Int) {
            let deadline = monotonicSeconds() + 60
            while peer.delivered(port: port) < count, monotonicSeconds() < deadline { usleep(20_000) }
            if peer.delivered(port: port) < count { say("          (\(name): not every record arrived within 60 s)") }
        }
        delivered +=
            pacedClients(
                socket: peer.socket, prefix: "pw\(rate)-", sink: "redis:peer", rate: rate, seconds: warmup,
                answered: false
            ).count
        waitPeer(delivered)
        let cpu0 = cpuTimes(peer.pid), switches0 = contextSwitches(peer.pid), client0 = cpuSeconds(getpid())
        let sent = pacedClients(
            socket: peer.socket, prefix: "pm\(rate)-", sink: "redis:peer", rate: rate, seconds: seconds, answered: false
        ).count
        let clientCPU = cpuSeconds(getpid()) - client0
        delivered += sent
        waitPeer(delivered)
        let cpu1 = cpuTimes(peer.pid), switches1 = contextSwitches(peer.pid)
        let n = Double(max(1, sent))
        let user = cpu1.user - cpu0.user, system = cpu1.system - cpu0.system
        say(
            "\(name.padding(toLength: 9, withPad: " ", startingAt: 0)) \(rate)/s for \(seconds) s: \(sent) records; CPU \(format((user + system) / n * 1e6)) µs per record (user \(format(user / n * 1e6)), system \(format(system / n * 1e6))), "
                + "\(format(100 * (user + system) / Double(seconds))) % of a core; the client's \(format(100 * clientCPU / Double(seconds))) %"
        )
        say("          context switches \(switches1.perRecord(since: switches0, records: n))")
        if !noSyscalls, let perf = PerfSyscalls(pid: peer.pid, directory: dir) {
            let counted = pacedClients(
                socket: peer.socket, prefix: "ps\(rate)-", sink: "redis:peer", rate: rate, seconds: min(seconds, 5),
                answered: false
            ).count
            delivered += counted
            waitPeer(delivered)
            let counts = perf.stop()
            let per = { (name: String) in format(Double(counts[name] ?? 0) / Double(max(1, counted))) }
            let detail = PerfSyscalls.calls.filter { (counts[$0] ?? 0) > 0 }.map { "\($0) \(per($0))" }.joined(
                separator: ", ")
            say("          system calls \(per("total")) per record (perf, \(counted) records): \(detail)")
        }
    }

    /// Every connection sends its share of `rate` records/s for `seconds`, one at a time; the
    /// ack latencies of all of them. `answered: false` (a peer): each record is written at its
    /// time and nothing is read; one zero latency per record written.
    private func pacedClients(
        socket: String, prefix: String, sink: String, rate: Int, seconds: Int, answered: Bool = true
    ) -> [Double] {
        let collected = LatencyCollector()
        let group = DispatchGroup()
        let total = rate * seconds
        let start = monotonicSeconds() + 0.05
        for c in 0..<connections {
            group.enter()
            BlockingThread.detach { [connections, payloadBytes] in
                defer { group.leave() }
                guard let client = try? IngestClient(path: socket) else { return }
                let pad = String(repeating: "x", count: max(0, payloadBytes - 12))
                let tail = Array(#"","sink":"\#(sink)","payload":{"d":"\#(pad)"}}"#.utf8) + [UInt8(ascii: "\n")]
                var latencies: [Double] = []
                var request: [UInt8] = []
                request.reserveCapacity(tail.count + 64)
                var i = c
                while i < total {
                    let due = start + Double(i) / Double(rate)
                    let now = monotonicSeconds()
                    if due > now { usleep(useconds_t((due - now) * 1_000_000)) }
                    request.removeAll(keepingCapacity: true)
                    request += Array(#"{"id":"\#(prefix)\#(i)"#.utf8)
                    request += tail
                    let sent = monotonicSeconds()
                    guard client.write(request) else { break }
                    guard answered else {
                        latencies.append(0)
                        i += connections
                        continue
                    }
                    guard let line = client.readLine(timeoutMillis: 30_000) else { break }
                    if line.starts(with: Array(#"{"id""#.utf8)), line.count > 20 {
                        latencies.append(monotonicSeconds() - sent)
                    }
                    i += connections
                }
                collected.add(latencies)
            }
        }
        group.wait()
        return collected.all.flatMap { $0 }
    }

    /// Waits (at most 60 s) until `count` records reached the sink.
    private func waitDelivered(_ count: Int, dir: String, port: Int) {
        let deadline = monotonicSeconds() + 60
        while monotonicSeconds() < deadline {
            let have = sink == "redis" ? xlen(port: port, key: "paced") : lineCount(dir + "/outbox/paced.ndjson")
            if have >= count { return }
            usleep(20_000)
        }
        say("          (not every record was delivered within 60 s)")
    }

    private func lineCount(_ path: String) -> Int {
        guard let data = FileManager.default.contents(atPath: path) else { return 0 }
        return data.reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
    }

    /// One thread appending `bytes` and fdatasyncing, `rate` times a second for `seconds`: its
    /// own CPU (user + kernel) per record, the least any durable acknowledgement can cost.
    private func fdatasyncFloor(dir: String, rate: Int, seconds: Int, bytes: Int) -> Double {
        let result = LatencyCollector()
        let group = DispatchGroup()
        group.enter()
        BlockingThread.detach {
            defer { group.leave() }
            let fd = open(dir + "/floor.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0o600)
            guard fd >= 0 else { return }
            defer {
                close(fd)
                unlink(dir + "/floor.tmp")
            }
            let record = [UInt8](repeating: 0x78, count: bytes)
            let total = rate * seconds
            let start = monotonicSeconds()
            let cpu0 = threadCPUSeconds()
            for i in 0..<total {
                let due = start + Double(i) / Double(rate)
                let now = monotonicSeconds()
                if due > now { usleep(useconds_t((due - now) * 1_000_000)) }
                _ = record.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
                fdatasync(fd)
            }
            result.add([(threadCPUSeconds() - cpu0) / Double(total)])
        }
        group.wait()
        return result.all.first?.first ?? 0
    }
}

/// `perf stat` counting a process's system calls (all of them, and the ones named in `calls`)
/// until `stop()`; nil when perf is not installed or cannot attach.
final class PerfSyscalls: @unchecked Sendable {
    static let calls = [
        "fdatasync", "fsync", "futex", "epoll_wait", "read", "write", "readv", "writev", "pread64", "pwrite64",
        "recvmsg", "sendmsg", "recvfrom", "sendto", "timerfd_settime", "eventfd2", "clock_nanosleep",
    ]
    private let process = Process()
    private let output: String

    init?(pid: Int32, directory: String) {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/perf") else { return nil }
        output = directory + "/perf.csv"
        process.executableURL = URL(fileURLWithPath: "/usr/bin/perf")
        process.arguments =
            ["stat", "-x", ",", "-o", output, "-p", "\(pid)", "-e", "raw_syscalls:sys_enter"]
            + Self.calls.flatMap { ["-e", "syscalls:sys_enter_\($0)"] }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return nil }
        usleep(300_000)  // perf attaches to every thread before the window starts
        guard process.isRunning else { return nil }
    }

    /// Counts by call name, and "total".
    func stop() -> [String: Int] {
        process.interrupt()
        process.waitUntilExit()
        guard let text = try? String(contentsOfFile: output, encoding: .utf8) else { return [:] }
        var counts: [String: Int] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            guard fields.count > 2, let value = Int(fields[0]) else { continue }
            let event = String(fields[2])
            if event == "raw_syscalls:sys_enter" {
                counts["total"] = value
            } else if event.hasPrefix("syscalls:sys_enter_") {
                counts[String(event.dropFirst("syscalls:sys_enter_".count))] = value
            }
        }
        return counts
    }
}

/// utime and stime of a process, in seconds.
func cpuTimes(_ pid: Int32) -> (user: Double, system: Double) {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return (0, 0) }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 13, let u = Double(fields[11]), let s = Double(fields[12]) else { return (0, 0) }
    let tick = Double(sysconf(Int32(_SC_CLK_TCK)))
    return (u / tick, s / tick)
}

/// Voluntary and involuntary context switches of every thread a process has now, by thread.
struct ThreadSwitches {
    var byThread: [String: (name: String, count: Int)] = [:]

    /// Since `earlier`, summed by thread name, most first (a thread born meanwhile counts whole).
    func byName(since earlier: ThreadSwitches) -> [(name: String, count: Int)] {
        var sums: [String: Int] = [:]
        for (tid, now) in byThread {
            sums[now.name, default: 0] += now.count - (earlier.byThread[tid]?.count ?? 0)
        }
        return sums.filter { $0.value > 0 }.map { ($0.key, $0.value) }.sorted { $0.count > $1.count }
    }

    /// "8.21 per record (by thread: sinkd-wal-write 4.54, ...)": the total since `earlier` and the
    /// five busiest thread names, per record.
    func perRecord(since earlier: ThreadSwitches, records n: Double) -> String {
        let threads = byName(since: earlier)
        let busiest = threads.prefix(5).map { "\($0.name) \(format(Double($0.count) / n))" }
        let total = threads.reduce(0) { $0 + $1.count }
        return "\(format(Double(total) / n)) per record (by thread: \(busiest.joined(separator: ", ")))"
    }
}

func contextSwitches(_ pid: Int32) -> ThreadSwitches {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
    var switches = ThreadSwitches()
    for task in tasks {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8) else {
            continue
        }
        var name = task
        var count = 0
        for line in status.split(separator: "\n") {
            if line.hasPrefix("Name:") {
                name = String(line.dropFirst(5).trimmingCharacters(in: .whitespaces))
            } else if line.contains("ctxt_switches:") {
                count += Int(line.split(separator: "\t").last ?? "") ?? 0
            }
        }
        switches.byThread[task] = (name, count)
    }
    return switches
}

/// The resident set of a process now, in KiB.
func residentKiB(_ pid: Int32) -> Int {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
    else { return 0 }
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
}

func threadCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
