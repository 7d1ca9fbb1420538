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

/// The NATS tests' server: SinkdTestServers' launcher (a real nats-server on 127.0.0.1, JetStream
/// on) with the JetStream requests the tests make through NATSAdmin.
typealias NATSServer = NATSProcess

extension NATSProcess {
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
            throw TestServerFailure("no message \(seq) in \(name): \(reply)")
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
        guard let fd = LoopbackTCP.connect(port: port) else {
            throw TestServerFailure("cannot connect the subscriber to port \(port)")
        }
        self.fd = fd
        let hello = "CONNECT \(connect)\r\nSUB \(subject) 1\r\nPING\r\n"
        _ = hello.withCString { write(fd, $0, strlen($0)) }
        let ready = DispatchSemaphore(value: 0)
        let t = Thread { [self] in readLoop(ready: ready) }
        t.start()
        thread = t
        guard ready.wait(timeout: .now() + 5) == .success else {
            throw TestServerFailure("the subscriber got no PONG")
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
