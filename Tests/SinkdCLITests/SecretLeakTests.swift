import Foundation
import Testing
import SinkdIngest
import SinkdTestSupport

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

/// An HTTP server that answers every request 400 with the request itself as the body: a hostile
/// (or merely chatty) remote that echoes back the URL and headers sinkd sent, secrets included.
final class EchoingHTTPServer: @unchecked Sendable {
    let port: Int
    private let fd: CInt

    /// `status` 400 echoes; 200 answers "ok" (a healthy endpoint).
    init(status: Int = 400) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var one: CInt = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        listen(fd, 64)
        var bound = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = Int(UInt16(bigEndian: bound.sin_port))
        let listener = fd
        Thread.detachNewThread {
            while true {
                let client = accept(listener, nil, nil)
                if client < 0 { return }
                var request: [UInt8] = []
                var chunk = [UInt8](repeating: 0, count: 16 << 10)
                while true {
                    let n = chunk.withUnsafeMutableBytes { recv(client, $0.baseAddress!, $0.count, 0) }
                    if n <= 0 { break }
                    request += chunk[0..<n]
                    if let text = String(bytes: request, encoding: .utf8), let end = text.range(of: "\r\n\r\n") {
                        let head = text[..<end.lowerBound]
                        let length =
                            head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                            .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                        if text.utf8.count - text.utf8.distance(from: text.startIndex, to: end.upperBound) >= length {
                            break
                        }
                    }
                }
                let body = status == 400 ? "you sent: " + String(decoding: request, as: UTF8.self) : "ok"
                let response =
                    (status == 400 ? "HTTP/1.1 400 Bad Request\r\n" : "HTTP/1.1 200 OK\r\n")
                    + "Content-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
                    + body
                _ = Array(response.utf8).withUnsafeBytes {
                    send(client, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL))
                }
                close(client)
            }
        }
    }

    deinit { shutdown(fd, Int32(SHUT_RDWR)); close(fd) }
}

/// Issue 18, item 7: a secret in every family's configuration, errors triggered in every family
/// (unreachable brokers, and an HTTP endpoint that echoes the request back in a 400), then every
/// output searched for the secrets: the log, STATUS=, `sinkd status` (text and JSON), /metrics,
/// the dead-letter store and `sinkd dlq show`, `sinkd check-config`.
@Suite(.serialized, .blockingThreads) struct SecretLeakTests {
    static let secrets = [
        "hookPw-3f9a1c", "headerTok-77e2b0", "redisPw-0c4d9e", "sqsSecret-5b8f21", "amqpPw-a41d77", "natsPw-e0c3aa",
        "pgPw-19b6f4",
    ]

    @Test func noSecretReachesAnyOutput() async throws {
        try await blocking {
            let dir = try TemporaryDirectory()
            let echo = try EchoingHTTPServer()
            let port = LoopbackTCP.freePort()
            let dead = LoopbackTCP.freePort()  // nothing listens there
            let config = try dir.write(
                "sinkd.yaml",
                """
                ingest: {socket: \(dir.path)/ingest.sock}
                control: {socket: \(dir.path)/control.sock}
                wal: {directory: \(dir.path)/wal}
                log: {level: info, format: logfmt}
                metrics: {listen: "127.0.0.1:\(port)"}
                delivery: {dead_letter: {directory: \(dir.path)/dead}}
                sinks:
                  http:
                    endpoints:
                      hook: {url: "http://svc:${env:HOOK_PW}@127.0.0.1:\(echo.port)/hook?token=${env:HOOK_PW}", headers: {Authorization: "Bearer \(Self.secrets[1])"}}
                  redis: {url: "redis://:\(Self.secrets[2])@127.0.0.1:\(dead)/0"}
                  sqs: {endpoint: "http://127.0.0.1:\(dead)", region: us-east-1, access_key_id: AKIDEXAMPLE, secret_access_key: "\(Self.secrets[3])"}
                  amqp: {urls: ["amqp://guest:\(Self.secrets[4])@127.0.0.1:\(dead)/%2f"]}
                  nats: {servers: ["nats://sinkd:\(Self.secrets[5])@127.0.0.1:\(dead)"]}
                  conductor: {postgres: {url: "postgres://conductor:\(Self.secrets[6])@127.0.0.1:\(dead)/conductor"}}
                """)
            let env = ["HOOK_PW": Self.secrets[0]]
            let (daemon, notify, _) = try SystemdTests.startNotified(dir, config: config, environment: env)
            defer { daemon.stopIfRunning() }
            let client = try daemon.connect(socket: dir.path + "/ingest.sock")
            let sinks = [
                "http:hook", "redis:events", "sqs:orders", "amqp_queue:billing", "nats:alerts", "conductor:audit",
            ]
            for (i, sink) in sinks.enumerated() {
                client.write(
                    Array(
                        #"{"id":"s\#(i)","sink":"\#(sink)","workflowType":"wf","taskRefName":"t","payload":{"n":\#(i)}}"#
                            .utf8) + [10])
                #expect(
                    client.readLine(timeoutMillis: 10_000).flatMap(CrashDurabilityTests.acceptedID) == "s\(i)",
                    "\(sink) accepted")
            }
            // Every sink has failed at least once: the http record is dead-lettered (400), the others
            // are down with a connection error.
            var status = ""
            let deadline = Date().addingTimeInterval(30)
            repeat {
                usleep(200_000)
                status = (try? SinkdProcess.run(["status", "--config", config], environment: env))?.stdout ?? ""
            } while Date() < deadline
                && !(sinks.dropFirst().map({ $0 == "conductor:audit" ? "conductor:wf:audit" : $0 }).allSatisfy { s in
                    status.split(separator: "\n").contains { $0.contains(s) && $0.contains("down") }
                }
                    && FileManager.default.fileExists(atPath: dir.path + "/dead/http%3Ahook.ndjson"))
            #expect(
                FileManager.default.fileExists(atPath: dir.path + "/dead/http%3Ahook.ndjson"),
                "the http record was dead-lettered")
            for s in sinks.dropFirst().map({ $0 == "conductor:audit" ? "conductor:wf:audit" : $0 }) {
                #expect(
                    status.split(separator: "\n").contains { $0.contains(s) && $0.contains("down") },
                    "\(s) is down: \(status)")
            }
            notify.collect(for: 0.5)
            var outputs: [(String, String)] = [
                ("the log", (try? String(contentsOfFile: daemon.log, encoding: .utf8)) ?? ""),
                ("STATUS=", notify.messages.map(\.text).joined(separator: "\n")),
                ("sinkd status", status),
                (
                    "sinkd status --json",
                    try SinkdProcess.run(["status", "--config", config, "--json"], environment: env).stdout
                ),
                ("/metrics", MetricsEndpointTests.get(port: port, path: "/metrics").body),
                ("sinkd dlq show", try SinkdProcess.run(["dlq", "show", "--config", config], environment: env).stdout),
                ("sinkd dlq list", try SinkdProcess.run(["dlq", "list", "--config", config], environment: env).stdout),
                (
                    "sinkd check-config",
                    try SinkdProcess.run(["check-config", "--config", config], environment: env).stdout
                ),
            ]
            for file in (try? FileManager.default.contentsOfDirectory(atPath: dir.path + "/dead")) ?? [] {
                outputs.append(
                    (
                        "dead letter " + file,
                        (try? String(contentsOfFile: dir.path + "/dead/" + file, encoding: .utf8)) ?? ""
                    ))
            }
            for (name, text) in outputs {
                #expect(!text.isEmpty, "\(name) has something to search")
                for secret in Self.secrets {
                    #expect(
                        !text.contains(secret),
                        "\(name) shows the secret \(secret): …\(text.components(separatedBy: secret)[0].suffix(160))")
                }
            }
            // The echo really carried the secrets: what was hidden is marked so.
            let deadLetters = outputs.filter { $0.0.hasPrefix("dead letter") }.map(\.1).joined()
            #expect(deadLetters.contains("(hidden)"), "the echoed request was redacted, not absent")
        }
    }
}
