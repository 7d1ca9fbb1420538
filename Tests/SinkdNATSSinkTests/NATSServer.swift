import Foundation
import Logging
import NIOCore
import NIOPosix
import SinkdCore
import SinkdIngest
@testable import SinkdNATSSink

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

/// A real nats-server on 127.0.0.1 (Debian's nats-server, installed by scripts/test), started by
/// the test on a free port with JetStream and its store in a temporary directory. A missing
/// binary fails the test: nothing is skipped.
final class NATSServer: @unchecked Sendable {
    static let binary = "/usr/sbin/nats-server"
    let port: Int
    let directory: String
    /// Extra lines of the server's configuration file (authorization, max_payload, tls).
    let extraConfig: String
    private(set) var process: Process?

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Operator-mode servers without a system account cannot run JetStream: `jetStream: false`.
    let jetStream: Bool

    init(config: String = "", jetStream: Bool = true) throws {
        self.jetStream = jetStream
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            throw Failure(
                description: "nats-server is not installed (scripts/test installs it: apt-get install nats-server)")
        }
        port = LoopbackTCP.freePort()
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-nats-\(UUID().uuidString.prefix(8))")
            .path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        extraConfig = config
        try start()
    }

    deinit {
        kill()
        try? FileManager.default.removeItem(atPath: directory)
    }

    var url: String { "nats://127.0.0.1:\(port)" }

    func start() throws {
        let conf = """
            listen: 127.0.0.1:\(port)
            \(jetStream ? "jetstream { store_dir: \"\(directory)/js\" }" : "")
            lame_duck_grace_period: 1s
            lame_duck_duration: 30s
            \(extraConfig)
            """
        try conf.write(toFile: directory + "/nats.conf", atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        p.arguments = ["-c", directory + "/nats.conf"]
        _ = FileManager.default.createFile(atPath: directory + "/nats.log", contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: directory + "/nats.log"))
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, p.isRunning {
            if LoopbackTCP.canConnect(port: port) { return }
            usleep(20_000)
        }
        throw Failure(
            description:
                "nats-server did not start on port \(port): \((try? String(contentsOfFile: directory + "/nats.log", encoding: .utf8)) ?? "")"
        )
    }

    func kill() {
        guard let p = process else { return }
        Glibc.kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        process = nil
    }

    /// Lame-duck mode (SIGUSR2, as `nats-server --signal ldm` sends).
    func enterLameDuckMode() {
        guard let p = process else { return }
        Glibc.kill(p.processIdentifier, SIGUSR2)
    }

    /// A plain connection for the test's own requests (JetStream API).
    /// An admin connection; `client`: the sink configuration whose credentials, server and TLS to use.
    func admin(_ client: NATSSinkConfig? = nil) async throws -> NATSAdmin {
        var config = client ?? NATSSinkConfig()
        if client == nil { config.servers = [url] }
        return try await NATSAdmin.connect(config)
    }

    func jetStream(
        _ subject: String, _ body: String = "", authenticated: NATSSinkConfig? = nil
    ) async throws -> [String: Any] {
        let admin = try await admin(authenticated)
        defer { Task { await admin.close() } }
        return try await admin.jetStream(subject, body)
    }

    func createStream(_ name: String, subjects: [String], authenticated: NATSSinkConfig? = nil) async throws {
        let admin = try await admin(authenticated)
        defer { Task { await admin.close() } }
        try await admin.createStream(name, subjects: subjects)
    }

    /// Messages in a stream (0 when it does not exist).
    func streamCount(_ name: String, authenticated: NATSSinkConfig? = nil) async throws -> Int {
        let admin = try await admin(authenticated)
        defer { Task { await admin.close() } }
        return try await admin.streamMessageCount(name)
    }

    /// Message `seq` of a stream: its payload and headers block.
    func streamMessage(_ name: String, seq: Int) async throws -> (data: String, headers: String) {
        let reply = try await jetStream("$JS.API.STREAM.MSG.GET.\(name)", #"{"seq":\#(seq)}"#)
        guard let message = reply["message"] as? [String: Any] else {
            throw Failure(description: "no message \(seq) in \(name): \(reply)")
        }
        let data =
            (message["data"] as? String).flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) }
            ?? ""
        let headers =
            (message["hdrs"] as? String).flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) }
            ?? ""
        return (data, headers)
    }

    /// Waits until `name` holds at least `count` messages; returns what it holds.
    func waitForStream(
        _ name: String, count: Int, timeout: Duration = .seconds(30), authenticated: NATSSinkConfig? = nil
    ) async throws -> Int {
        let deadline = ContinuousClock.now + timeout
        var n = (try? await streamCount(name, authenticated: authenticated)) ?? 0
        while n < count, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            n = (try? await streamCount(name, authenticated: authenticated)) ?? 0
        }
        return n
    }
}

/// An independent core-NATS subscriber on a plain blocking socket: CONNECT, SUB, and a thread
/// that collects every MSG payload.
final class NATSSubscriber: @unchecked Sendable {
    private let fd: Int32
    private let lock = NSLock()
    private var payloads: [String] = []
    private var thread: Thread?

    init(port: Int, subject: String, connect: String = "{}") throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            throw NATSServer.Failure(description: "cannot connect the subscriber to port \(port)")
        }
        let hello = "CONNECT \(connect)\r\nSUB \(subject) 1\r\nPING\r\n"
        _ = hello.withCString { write(fd, $0, strlen($0)) }
        let ready = DispatchSemaphore(value: 0)
        let t = Thread { [self] in readLoop(ready: ready) }
        t.start()
        thread = t
        guard ready.wait(timeout: .now() + 5) == .success else {
            throw NATSServer.Failure(description: "the subscriber got no PONG")
        }
    }

    deinit { close(fd) }

    var received: [String] { lock.withLock { payloads } }

    func waitFor(count: Int, timeout: Duration = .seconds(20)) async -> [String] {
        let deadline = ContinuousClock.now + timeout
        while received.count < count, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        return received
    }

    private func readLoop(ready: DispatchSemaphore) {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let parser = NATSParser()
        var signalled = false
        while true {
            let n = read(fd, &chunk, chunk.count)
            guard n > 0 else { return }
            buffer.append(contentsOf: chunk[0..<n])
            while let (op, used) = (try? buffer.withUnsafeBytes { try parser.parse($0) }) ?? nil {
                buffer.removeFirst(used)
                switch op {
                case .ping: _ = "PONG\r\n".withCString { write(fd, $0, 6) }
                case .pong where !signalled:
                    signalled = true
                    ready.signal()
                case .message(_, _, _, _, let payload):
                    lock.withLock { payloads.append(String(decoding: payload, as: UTF8.self)) }
                default: break
                }
            }
        }
    }
}
