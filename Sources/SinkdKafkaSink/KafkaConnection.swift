import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A request to send on a Kafka connection: the handler gives it its correlation id (in write
/// order, so responses, which a broker sends in request order, match by position and by id).
struct KafkaOutbound {
    var build: @Sendable (Int32) -> [UInt8]
    var promise: EventLoopPromise<[UInt8]>
}

/// The connection's failure modes, said plainly.
public struct KafkaConnectionError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// Frames in, responses matched to requests; executes what the I/O-free `KafkaFrameDecoder` says.
final class KafkaClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = KafkaOutbound
    typealias OutboundOut = ByteBuffer

    private var decoder = KafkaFrameDecoder()
    private var nextCorrelation: Int32 = 1
    private var waiting: [(correlation: Int32, promise: EventLoopPromise<[UInt8]>)] = []
    private var head = 0

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        let correlation = nextCorrelation
        nextCorrelation = nextCorrelation == Int32.max ? 1 : nextCorrelation + 1
        waiting.append((correlation, request.promise))
        context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: request.build(correlation))), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        decoder.feed(buffer.readableBytesView)
        do {
            while let frame = try decoder.next() {
                guard head < waiting.count else { throw KafkaConnectionError("the broker sent a response nobody asked for") }
                guard frame.count >= 4 else { throw KafkaConnectionError("the broker sent a response shorter than its correlation id") }
                let correlation = frame.prefix(4).reduce(Int32(0)) { ($0 << 8) | Int32($1) }
                let expected = waiting[head]
                guard correlation == expected.correlation else {
                    throw KafkaConnectionError("the broker answered correlation id \(correlation) where \(expected.correlation) was next")
                }
                head += 1
                if head > 64, head * 2 > waiting.count {
                    waiting.removeFirst(head)
                    head = 0
                }
                expected.promise.succeed(frame)
            }
        } catch {
            failAll(error)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(KafkaConnectionError("the connection closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: Error) {
        let pending = waiting[head...]
        waiting.removeAll()
        head = 0
        for p in pending { p.promise.fail(error) }
    }
}

/// One connection to one broker: ApiVersions first, then pipelined requests.
public final class KafkaConnection: Sendable {
    let channel: Channel
    public let broker: String
    /// The versions the broker speaks, by api key.
    public let versions: [Int16: KafkaApiVersions.Range]

    init(channel: Channel, broker: String, versions: [Int16: KafkaApiVersions.Range]) {
        self.channel = channel
        self.broker = broker
        self.versions = versions
    }

    public static func connect(host: String, port: Int, clientID: String, group: EventLoopGroup, timeout: TimeAmount) async throws -> KafkaConnection {
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(KafkaClientHandler())
                }
            }
            .connect(host: host, port: port).get()
        let broker = "\(host):\(port)"
        let probe = KafkaConnection(channel: channel, broker: broker, versions: [:])
        do {
            let payload = try await probe.request(timeout: timeout) { KafkaApiVersions.request(correlationID: $0, clientID: clientID) }
            let response = try KafkaApiVersions.response(payload)
            guard response.errorCode == 0 else { throw KafkaConnectionError("broker \(broker) refused ApiVersions: \(KafkaErrorCode.name(response.errorCode))") }
            return KafkaConnection(channel: channel, broker: broker, versions: response.versions)
        } catch {
            try? await channel.close()
            throw error
        }
    }

    public var isActive: Bool { channel.isActive }

    /// The highest version of `apiKey` both sides speak, within `supported`.
    public func version(_ apiKey: Int16, supported: ClosedRange<Int16>) -> Int16? {
        guard let range = versions[apiKey] else { return nil }
        let top = min(range.max, supported.upperBound)
        return top >= max(range.min, supported.lowerBound) ? top : nil
    }

    /// Sends one request (built with its correlation id) and returns the response frame's payload.
    /// No answer within `timeout` closes the connection (its other requests fail too: their
    /// outcome is then unknown, like this one's).
    public func request(timeout: TimeAmount, _ build: @escaping @Sendable (Int32) -> [UInt8], queued: () -> Void = {}) async throws -> [UInt8] {
        let promise = channel.eventLoop.makePromise(of: [UInt8].self)
        let timer = channel.eventLoop.scheduleTask(in: timeout) { [channel, broker] in
            promise.fail(KafkaConnectionError("no answer from broker \(broker) within \(timeout.nanoseconds / 1_000_000) ms"))
            channel.close(promise: nil)
        }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        channel.writeAndFlush(KafkaOutbound(build: build, promise: promise)).whenFailure { promise.fail($0) }
        queued()
        return try await promise.futureResult.get()
    }

    public func close() async {
        try? await channel.close()
    }
}
