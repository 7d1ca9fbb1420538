import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Decodes RESP values from the byte stream.
struct RESPDecoder: ByteToMessageDecoder {
    typealias InboundOut = RESPValue

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let parsed = try buffer.withUnsafeReadableBytes { try RESP.parse($0) }
        guard let (value, used) = parsed else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: used)
        context.fireChannelRead(wrapInboundOut(value))
        return .continue
    }
}

/// Matches replies to pipelined commands, in order.
final class RESPClientHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = (bytes: [UInt8], replies: Int, promise: EventLoopPromise<[RESPValue]>)
    typealias OutboundOut = ByteBuffer

    private var waiting: [(count: Int, collected: [RESPValue], promise: EventLoopPromise<[RESPValue]>)] = []
    private var head = 0

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        waiting.append((request.replies, [], request.promise))
        context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: request.bytes)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        guard head < waiting.count else {
            context.fireErrorCaught(RESP.ProtocolError(description: "a reply nobody asked for"))
            return
        }
        waiting[head].collected.append(value)
        if waiting[head].collected.count == waiting[head].count {
            let done = waiting[head]
            head += 1
            if head > 64, head * 2 > waiting.count {
                waiting.removeFirst(head)
                head = 0
            }
            done.promise.succeed(done.collected)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(ChannelError.ioOnClosedChannel)
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

/// One connection to a Redis server, pipelining commands.
final class RedisConnection: Sendable {
    let channel: Channel

    init(channel: Channel) {
        self.channel = channel
    }

    static func connect(host: String, port: Int, group: EventLoopGroup, timeout: TimeAmount) async throws -> RedisConnection {
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPDecoder()))
                    try channel.pipeline.syncOperations.addHandler(RESPClientHandler())
                }
            }
            .connect(host: host, port: port).get()
        return RedisConnection(channel: channel)
    }

    var isActive: Bool { channel.isActive }

    /// Sends the commands in one write and returns their replies, in order.
    func send(_ commands: [[[UInt8]]]) async throws -> [RESPValue] {
        var bytes: [UInt8] = []
        for c in commands { RESP.encodeCommand(c, into: &bytes) }
        return try await send(encoded: bytes, replies: commands.count)
    }

    /// Sends already encoded commands and returns their `replies` replies, in order.
    /// `queued` is called once the write is queued on the channel (writes queued one after the
    /// other reach redis in that order).
    func send(encoded bytes: [UInt8], replies: Int, queued: () -> Void = {}) async throws -> [RESPValue] {
        let promise = channel.eventLoop.makePromise(of: [RESPValue].self)
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { promise.fail($0) }  // closed before the write: never left
        channel.writeAndFlush((bytes: bytes, replies: replies, promise: promise), promise: written)
        queued()
        return try await promise.futureResult.get()
    }

    func close() async {
        try? await channel.close()
    }
}
