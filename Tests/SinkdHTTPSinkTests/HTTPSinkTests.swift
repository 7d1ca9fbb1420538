import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing
import SinkdCore
import SinkdDelivery
@testable import SinkdHTTPSink
import SinkdTestSupport

/// A real HTTP/1.1 server on 127.0.0.1 inside the test: answers from a script and records what
/// it received.
final class ScriptedHTTPServer: Sendable {
    struct Received: Sendable {
        var path: String
        var headers: HTTPHeaders
        var body: [UInt8]
    }

    let channel: Channel
    let state: NIOLockedValueBox<(script: [(HTTPResponseStatus, [(String, String)])], received: [Received])>
    var port: Int { channel.localAddress!.port! }

    init(script: [(HTTPResponseStatus, [(String, String)])] = []) async throws {
        let state = NIOLockedValueBox<(script: [(HTTPResponseStatus, [(String, String)])], received: [Received])>(
            (script, []))
        self.state = state
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandler(Handler(state: state))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    var received: [Received] { state.withLockedValue { $0.received } }

    func stop() async { try? await channel.close() }

    final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let state: NIOLockedValueBox<(script: [(HTTPResponseStatus, [(String, String)])], received: [Received])>
        var head: HTTPRequestHead?
        var body: [UInt8] = []

        init(state: NIOLockedValueBox<(script: [(HTTPResponseStatus, [(String, String)])], received: [Received])>) {
            self.state = state
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h):
                head = h
                body = []
            case .body(let b):
                body += Array(b.readableBytesView)
            case .end:
                let (status, extra) = state.withLockedValue { s -> (HTTPResponseStatus, [(String, String)]) in
                    s.received.append(Received(path: head!.uri, headers: head!.headers, body: body))
                    return s.script.isEmpty ? (.ok, []) : s.script.removeFirst()
                }
                var headers = HTTPHeaders(extra)
                let text = Array("answer \(status.code)".utf8)
                headers.add(name: "Content-Length", value: "\(text.count)")
                context.write(
                    wrapOutboundOut(.head(HTTPResponseHead(version: head!.version, status: status, headers: headers))),
                    promise: nil)
                context.write(
                    wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: text)))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}

@Suite(.serialized, .blockingThreads) struct HTTPSinkTests {
    static func family(
        _ url: String, headers: [String: String] = [:], timeout: Duration = .seconds(5)
    ) -> HTTPSinkFamily {
        var config = HTTPSinkConfig()
        var endpoint = HTTPEndpoint(url: url)
        endpoint.headers = headers
        endpoint.timeout = timeout
        config.endpoints["hook"] = endpoint
        return HTTPSinkFamily(config: config)
    }

    static func record(_ id: String, _ payload: String = #"{"a": 1}"#) -> SequencedRecord {
        var r = EventRecord(id: id, sink: "http:hook", payload: Array(payload.utf8))
        r.workflowInstanceId = "wi-1"
        return SequencedRecord(seq: 1, record: r)
    }

    static func client(_ family: HTTPSinkFamily) throws -> any SinkClient {
        try family.makeClient(
            for: try SinkAddress.parse(identity: "http:hook"), options: ConfigFamily.http.defaultOptions)
    }

    @Test func postsTheBodyWithIdempotencyHeaders() async throws {
        let server = try await ScriptedHTTPServer()
        let family = Self.family("http://127.0.0.1:\(server.port)/events", headers: ["Authorization": "Bearer t0ken"])
        let outcomes = try await Self.client(family).send([
            Self.record("t-1", #"{ "spaced" : [1, 2] }"#), Self.record("t-2"),
        ])
        #expect(outcomes == [.delivered, .delivered])
        let received = server.received.sorted {
            $0.headers.first(name: "X-Sinkd-Message-Id")! < $1.headers.first(name: "X-Sinkd-Message-Id")!
        }
        #expect(received.count == 2)
        #expect(received[0].path == "/events")
        #expect(received[0].body == Array(#"{ "spaced" : [1, 2] }"#.utf8), "the body byte for byte")
        #expect(received[0].headers.first(name: "Idempotency-Key") == "t-1")
        #expect(received[0].headers.first(name: "X-Sinkd-Message-Id") == "t-1")
        #expect(received[0].headers.first(name: "Authorization") == "Bearer t0ken")
        #expect(received[0].headers.first(name: "Content-Type") == "application/json")
        #expect(received[0].headers.first(name: "X-Sinkd-Workflow-Instance-Id") == "wi-1")
        await family.shutdown()
        await server.stop()
    }

    @Test func statusCodesMapToOutcomes() async throws {
        let server = try await ScriptedHTTPServer(script: [
            (.serviceUnavailable, []), (.tooManyRequests, [("Retry-After", "7")]), (.requestTimeout, []),
            (.badRequest, []), (.notFound, []), (.created, []),
        ])
        let family = Self.family("http://127.0.0.1:\(server.port)/e")
        let client = try Self.client(family)
        var outcomes: [DeliveryOutcome] = []
        for i in 0..<6 { outcomes += try await client.send([Self.record("s\(i)")]) }
        #expect(
            outcomes == [
                .retryable("HTTP 503 Service Unavailable: answer 503"),
                .retryable("HTTP 429 Too Many Requests: answer 429", retryAfter: .seconds(7)),
                .retryable("HTTP 408 Request Timeout: answer 408"),
                .permanent("HTTP 400 Bad Request: answer 400"),
                .permanent("HTTP 404 Not Found: answer 404"),
                .delivered,
            ])
        await family.shutdown()
        await server.stop()
    }

    /// Issue 18, item 1: a record field that no HTTP header may carry is that record's permanent
    /// error (dead-lettered with the reason), not a connection failure that pins the sink; the
    /// rest of the batch is delivered.
    @Test func aPoisonRecordIsPermanentAndTheOthersAreDelivered() async throws {
        let server = try await ScriptedHTTPServer()
        let family = Self.family("http://127.0.0.1:\(server.port)/e")
        var badCorrelation = Self.record("ok-2")
        badCorrelation.record.correlationId = "line\r\nX-Forged: 1"
        let outcomes = try await Self.client(family).send([
            Self.record("poison\u{1}"), Self.record("ok-1"), badCorrelation,
        ])
        #expect(
            outcomes == [
                .permanent(
                    "the record's id holds the control character U+0001 at byte 6, which an HTTP header (Idempotency-Key) cannot carry"
                ),
                .delivered,
                .permanent(
                    "the record's correlationId holds the control character U+000D at byte 4, which an HTTP header (X-Sinkd-Correlation-Id) cannot carry"
                ),
            ])
        #expect(server.received.map { $0.headers.first(name: "X-Sinkd-Message-Id") } == ["ok-1"])
        await family.shutdown()
        await server.stop()
    }

    @Test func nobodyListeningIsAConnectionError() async throws {
        let server = try await ScriptedHTTPServer()
        let port = server.port
        await server.stop()
        let family = Self.family("http://127.0.0.1:\(port)/e")
        await #expect(throws: SinkConnectionError.self) { _ = try await Self.client(family).send([Self.record("x")]) }
        await family.shutdown()
    }
}
