import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Decodes RESP values from the byte stream, within `limits`, in time linear in the bytes
/// received: a value's type line is searched for its CRLF once (a line trickling in a byte at a
/// time is not scanned again from its start), and with arrays refused a value is parsed only once
/// its line is complete.
struct RESPDecoder: NIOSingleStepByteToMessageDecoder {
    typealias InboundOut = RESPValue
    let limits: RESPLimits
    /// Bytes of the current value's type line already known to hold no CRLF.
    private var searched = 0
    var searchedBytes: Int { searched }

    init(limits: RESPLimits) {
        self.limits = limits
    }

    mutating func decode(buffer: inout ByteBuffer) throws -> RESPValue? {
        let limits = self.limits
        let searchFrom = searched
        let step = try buffer.withUnsafeReadableBytes {
            bytes throws(RESP.ProtocolError) -> (value: (RESPValue, Int)?, searched: Int) in
            guard bytes.count > 1 else { return (nil, 0) }
            if limits.maxArrayCount == 0, RESP.crlf(bytes, from: max(1, searchFrom)) == nil {
                guard bytes.count <= limits.maxLineBytes + 2 else { throw RESP.lineTooLong(limits) }
                return (nil, bytes.count - 1)
            }
            return (try RESP.parse(bytes, limits: limits), searchFrom)
        }
        searched = step.searched
        guard let (value, used) = step.value else { return nil }
        searched = 0
        buffer.moveReaderIndex(forwardBy: used)
        return value
    }

    /// A partial reply at the end of the stream is dropped (the connection is gone).
    mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> RESPValue? {
        try decode(buffer: &buffer)
    }
}

/// Matches replies to pipelined commands, in order, and holds each write's replies to their
/// deadline: one timer per connection, armed for the oldest deadline owed (not a scheduled task
/// per send: at Conductor's pace that was four heap calls per record). Past a deadline every
/// waiting send fails with `RedisReplyTimeout` and the connection is closed (the replies still
/// owed on it could no longer be matched).
final class RESPClientHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = (bytes: [UInt8], replies: Int, promise: EventLoopPromise<[RESPValue]>)
    typealias OutboundOut = ByteBuffer

    private struct Waiting {
        var count: Int
        var collected: [RESPValue]
        var promise: EventLoopPromise<[RESPValue]>
        var deadline: NIODeadline
    }

    private let replyTimeout: TimeAmount
    private var waiting: [Waiting] = []
    private var head = 0
    /// Armed for a deadline no later than the head's, while anything may be owed.
    private var timer: Scheduled<Void>?

    init(replyTimeout: TimeAmount) {
        self.replyTimeout = replyTimeout
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        let deadline = context.eventLoop.now + replyTimeout
        waiting.append(Waiting(count: request.replies, collected: [], promise: request.promise, deadline: deadline))
        if timer == nil { arm(context: context, at: deadline) }
        context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: request.bytes)), promise: promise)
    }

    /// The timer fires at `deadline`; then the head's own deadline decides (an earlier send may
    /// have been answered meanwhile: the timer is armed again for the new head, not replaced at
    /// every reply).
    private func arm(context: ChannelHandlerContext, at deadline: NIODeadline) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = bound.value
            handler.timer = nil
            handler.checkDeadline(context: context)
        }
    }

    private func checkDeadline(context: ChannelHandlerContext) {
        guard head < waiting.count else { return }
        let oldest = waiting[head]
        if oldest.deadline <= context.eventLoop.now {
            failAll(RedisReplyTimeout(timeout: replyTimeout, replies: oldest.count - oldest.collected.count))
            context.close(promise: nil)
        } else {
            arm(context: context, at: oldest.deadline)
        }
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
            if head == waiting.count {
                waiting.removeAll(keepingCapacity: true)
                head = 0
            } else if head > 64, head * 2 > waiting.count {
                waiting.removeFirst(head)
                head = 0
            }
            done.promise.succeed(done.collected)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
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

/// Replies that did not all come within the reply timeout.
struct RedisReplyTimeout: Error, CustomStringConvertible {
    let timeout: TimeAmount
    let replies: Int
    var description: String {
        "no reply within \(timeout.nanoseconds / 1_000_000) ms (\(replies) owed); the connection was closed"
    }
}

/// One connection to a Redis server, pipelining commands.
final class RedisConnection: Sendable {
    let channel: Channel

    /// How long a command's replies may take, all of them, from the write.
    let replyTimeout: TimeAmount

    init(channel: Channel, replyTimeout: TimeAmount) {
        self.channel = channel
        self.replyTimeout = replyTimeout
    }

    /// `limits`: what one reply may hold (the sink's commands get small replies, never arrays).
    static func connect(
        host: String, port: Int, group: EventLoopGroup, timeout: TimeAmount, replyTimeout: TimeAmount,
        limits: RESPLimits = .xaddReplies
    ) async throws -> RedisConnection {
        // group.any(): the loop this runs on when it is one of the group's, as a sink pipeline's
        // task is (SinkPipeline, EventLoopExecutor): its sends and their replies then need no
        // wake-up of another thread.
        let channel = try await ClientBootstrap(group: group.any())
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPDecoder(limits: limits)))
                    try channel.pipeline.syncOperations.addHandler(RESPClientHandler(replyTimeout: replyTimeout))
                }
            }
            .connect(host: host, port: port).get()
        return RedisConnection(channel: channel, replyTimeout: replyTimeout)
    }

    var isActive: Bool { channel.isActive }

    /// Sends the commands in one write and returns their replies, in order.
    func send(_ commands: [[[UInt8]]]) async throws -> [RESPValue] {
        var bytes: [UInt8] = []
        for c in commands { RESP.encodeCommand(c, into: &bytes) }
        return try await send(encoded: bytes, replies: commands.count)
    }

    /// Sends already encoded commands and returns their `replies` replies, in order, within
    /// `replyTimeout`: past it the connection is closed (the replies still owed on it could no
    /// longer be matched) and the wait fails with `RedisReplyTimeout`.
    /// `queued` is called once the write is queued on the channel (writes queued one after the
    /// other reach redis in that order).
    func send(encoded bytes: [UInt8], replies: Int, queued: () -> Void = {}) async throws -> [RESPValue] {
        let promise = channel.eventLoop.makePromise(of: [RESPValue].self)
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { promise.fail($0) }  // closed before the write: never left
        // The reply deadline is the handler's (RESPClientHandler): from the write, replyTimeout.
        channel.writeAndFlush((bytes: bytes, replies: replies, promise: promise), promise: written)
        queued()
        return try await promise.futureResult.get()
    }

    func close() async {
        try? await channel.close()
    }
}
