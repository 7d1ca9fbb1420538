import NIOCore
import Testing
import SinkdCore
import SinkdDelivery
@testable import SinkdHTTPSink
import SinkdTestSupport

/// HTTP servers gone wrong (issue 33): one deadline covers connecting, the head and the whole
/// body; a redirect is the endpoint's configuration, never the records' fault.
// .timeLimit: a guard against a hang, not a measurement. It counts the wait for a blocking test
// slot (BlockingThreads) too, which on a loaded CI machine has taken over a minute.
@Suite(.serialized, .blockingThreads, .timeLimit(.minutes(5))) struct HTTPHostileServerTests {
    static func send(
        _ server: ScriptedTCPServer, timeout: Duration = .milliseconds(800), records: Int = 1
    ) async throws -> Result<[DeliveryOutcome], SinkConnectionError> {
        let family = HTTPSinkTests.family("http://127.0.0.1:\(server.port)/e", timeout: timeout)
        defer { Task { await family.shutdown() } }
        let client = try HTTPSinkTests.client(family)
        do {
            return .success(try await client.send((0..<records).map { HTTPSinkTests.record("r\($0)") }))
        } catch {
            return .failure(error)
        }
    }

    /// After the request's end, `answer` (the request ends with its body, which the sink sends whole).
    static func answering(
        _ answer: @escaping @Sendable (ScriptedTCPServer.Connection) -> Void
    ) throws -> ScriptedTCPServer {
        try ScriptedTCPServer { connection, received in
            if String(decoding: received, as: UTF8.self).contains(#"{"a": 1}"#) { answer(connection) }
        }
    }

    /// The review: a 200 whose chunked body trickles hung every pooled connection (0 of 20 after
    /// 45 s); the endpoint's timeout did not cover the body.
    @Test func aBodyTricklingInIsCutAtTheEndpointTimeout() async throws {
        let server = try Self.answering { c in
            c.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            c.trickle(Array(String(repeating: "1\r\nx\r\n", count: 200).utf8), every: .milliseconds(50))
        }
        let start = ContinuousClock.now
        let result = try await Self.send(server, records: 3)
        #expect(ContinuousClock.now - start < .seconds(5))
        guard case .failure(let error) = result else {
            Issue.record("expected the sink to pause, got \(result)")
            return
        }
        #expect(error.message.contains("no complete response within 800ms"), "\(error)")
    }

    @Test func aServerThatNeverAnswersIsCutAtTheEndpointTimeout() async throws {
        let server = try ScriptedTCPServer { _, _ in }
        let start = ContinuousClock.now
        let result = try await Self.send(server)
        #expect(ContinuousClock.now - start < .seconds(5))
        guard case .failure(let error) = result else {
            Issue.record("expected the sink to pause, got \(result)")
            return
        }
        #expect(error.message.contains("no complete response within 800ms"), "\(error)")
    }

    /// A body larger than what is kept is read and dropped: memory stays at 4 KiB, and the status
    /// decides (here 200: delivered).
    @Test func aLargeBodyIsReadButNotKept() async throws {
        let server = try Self.answering { c in
            c.write("HTTP/1.1 200 OK\r\nContent-Length: \(4 << 20)\r\n\r\n")
            c.flood(Array(repeating: 0x61, count: 64 << 10), total: 4 << 20)
        }
        let result = try await Self.send(server, timeout: .seconds(10))
        #expect(try result.get() == [.delivered])
    }

    /// The review: a 307 dead-lettered every record. A redirect is the endpoint's configuration:
    /// the sink pauses with the reason and where it points, and the records wait.
    @Test func aRedirectPausesTheSinkInsteadOfDeadLetteringRecords() async throws {
        let server = try Self.answering { c in
            c.write(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: https://elsewhere.example/e\r\nContent-Length: 0\r\n\r\n")
        }
        let result = try await Self.send(server, records: 2)
        guard case .failure(let error) = result else {
            Issue.record("expected the sink to pause, got \(result)")
            return
        }
        #expect(
            error.message.contains(
                "HTTP 307 Temporary Redirect to https://elsewhere.example/e: sinkd does not follow redirects"),
            "\(error)")
    }
}
