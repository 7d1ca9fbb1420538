import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing
import SinkdCore
import SinkdDelivery
@testable import SinkdSQSSink

/// An HTTP endpoint answering each request with the next scripted response. The one stand-in for
/// SQS in the tests, for what moto never answers: per-entry failures, throttling, 5xx.
final class ScriptedSQSEndpoint: @unchecked Sendable {
    let channel: Channel
    var url: String { "http://127.0.0.1:\(channel.localAddress!.port!)" }
    private let responses: NIOLockedValueBox<[(status: Int, body: String)]>

    init(_ responses: [(status: Int, body: String)]) throws {
        let box = NIOLockedValueBox(responses)
        self.responses = box
        channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandler(Handler(responses: box))
                }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
    }

    deinit { try? channel.close().wait() }

    final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let responses: NIOLockedValueBox<[(status: Int, body: String)]>
        init(responses: NIOLockedValueBox<[(status: Int, body: String)]>) { self.responses = responses }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            let next: (status: Int, body: String) = responses.withLockedValue {
                $0.isEmpty ? (500, "{}") : $0.removeFirst()
            }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: SQSProtocol.contentType)
            headers.add(name: "Content-Length", value: "\(next.body.utf8.count)")
            context.write(
                wrapOutboundOut(
                    .head(
                        HTTPResponseHead(
                            version: .http1_1, status: HTTPResponseStatus(statusCode: next.status), headers: headers))),
                promise: nil)
            context.write(
                wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: next.body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}

@Suite struct ScriptedEndpointTests {
    static func send(_ responses: [(status: Int, body: String)], records: Int) async throws -> [DeliveryOutcome] {
        let endpoint = try ScriptedSQSEndpoint(responses)
        var config = SQSSinkConfig()
        config.endpoint = endpoint.url
        config.accessKeyID = "k"
        config.secretAccessKey = "s"
        let family = SQSSinkFamily(config: config, environment: [:])
        let sink = "sqs:\(endpoint.url)/000000000000/q"  // a URL: no GetQueueUrl round trip
        let client = try family.makeClient(
            for: try SinkAddress.parse(identity: sink), options: ConfigFamily.sqs.defaultOptions)
        let batch = (0..<records).map {
            SequencedRecord(
                seq: UInt64($0 + 1), record: EventRecord(id: "r\($0)", sink: sink, payload: Array("1".utf8)))
        }
        defer { _ = endpoint }
        let outcomes = try await client.send(batch)
        await family.shutdown()
        return outcomes
    }

    @Test func perEntryFailuresAreSplitBySenderFault() async throws {
        let body =
            #"{"Successful":[{"Id":"0","MessageId":"a"},{"Id":"3","MessageId":"b"}],"Failed":[{"Id":"1","SenderFault":true,"Code":"InvalidMessageContents","Message":"bad character"},{"Id":"2","SenderFault":false,"Code":"InternalError","Message":"try again"}]}"#
        let outcomes = try await Self.send([(200, body)], records: 4)
        #expect(
            outcomes == [
                .delivered, .permanent("InvalidMessageContents: bad character"), .retryable("InternalError: try again"),
                .delivered,
            ])
    }

    /// Issue 18, item 1: a batch refused as a whole because of one record must not dead-letter
    /// the others: each record is sent alone, and only the refused one is dead-lettered.
    @Test func aBatchRefusedAsAWholeIsSentRecordByRecord() async throws {
        let refused = (
            400, #"{"__type":"com.amazonaws.sqs#InvalidParameterValue","message":"invalid attribute value"}"#
        )
        let one = (200, #"{"Successful":[{"Id":"0","MessageId":"m"}],"Failed":[]}"#)
        let outcomes = try await Self.send([refused, one, refused, one], records: 3)
        #expect(
            outcomes == [.delivered, .permanent("HTTP 400 InvalidParameterValue: invalid attribute value"), .delivered])
    }

    @Test func throttlingAndServerErrorsAreRetriedAndOther4xxIsPermanent() async throws {
        let throttled = try await Self.send(
            [(400, #"{"__type":"com.amazonaws.sqs#ThrottlingException","message":"slow down"}"#)], records: 2)
        #expect(throttled == Array(repeating: .retryable("HTTP 400 ThrottlingException: slow down"), count: 2))
        let unavailable = try await Self.send([(503, "")], records: 1)
        guard case .retryable = unavailable[0] else { Issue.record("503 should be retried: \(unavailable)"); return }
        let invalid = try await Self.send(
            [(400, #"{"__type":"com.amazonaws.sqs#InvalidParameterValue","message":"no"}"#)], records: 1)
        #expect(invalid == [.permanent("HTTP 400 InvalidParameterValue: no")])
        let missing = try await Self.send([(200, #"{"Successful":[],"Failed":[]}"#)], records: 1)
        #expect(missing == [.retryable("SQS returned no result for this entry")])
    }
}
