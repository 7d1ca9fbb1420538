import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// For `sinkd-bench sqs --client-only`: an HTTP endpoint that answers every SendMessageBatch at
/// once with all its entries successful, keeping nothing. moto spends about 8 ms of Python per 1 KiB
/// message, so against moto both clients measure moto; against this they measure themselves
/// (signing, encoding, HTTP, parsing). A stand-in for SQS only in this benchmark, never in tests.
enum InstantSQSEndpoint {
    /// Entries answered successful so far.
    static let delivered = Atomic<Int>(0)

    static func start(group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) throws -> (Channel, Int) {
        let channel = try ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandler(Handler())
                }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
        return (channel, channel.localAddress?.port ?? 0)
    }

    final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        private var body = ByteBuffer()
        private var target = ""

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                target = head.headers.first(name: "X-Amz-Target") ?? ""
                body.clear()
            case .body(var chunk):
                body.writeBuffer(&chunk)
            case .end:
                let request =
                    (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any] ?? [:]
                var reply: [String: Any] = [:]
                switch target {
                case "AmazonSQS.SendMessageBatch":
                    let entries = request["Entries"] as? [[String: Any]] ?? []
                    reply["Successful"] = entries.map {
                        ["Id": $0["Id"] as? String ?? "", "MessageId": UUID().uuidString, "MD5OfMessageBody": ""]
                    }
                    reply["Failed"] = [[String: Any]]()
                    InstantSQSEndpoint.delivered.add(entries.count, ordering: .relaxed)
                default:  // GetQueueUrl, CreateQueue
                    reply["QueueUrl"] = "http://127.0.0.1/000000000000/\(request["QueueName"] as? String ?? "q")"
                }
                let bytes = (try? JSONSerialization.data(withJSONObject: reply)) ?? Data()
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: "application/x-amz-json-1.0")
                headers.add(name: "Content-Length", value: "\(bytes.count)")
                context.write(
                    wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))),
                    promise: nil)
                context.write(
                    wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: bytes)))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}
