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
///
/// Commands come two ways: as an outbound write with a promise for their replies (from any
/// thread), or, from a task on the channel's own loop (a sink pipeline's), through `send`, which
/// resumes the task's continuation: no promise, no write promise, no callback (issue 30: four
/// heap calls per batch), and the buffer the last send was encoded into is encoded into again.
final class RESPClientHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = (bytes: ByteBuffer, replies: Int, promise: EventLoopPromise<[RESPValue]>)
    typealias OutboundOut = ByteBuffer

    /// Who is told a write's replies.
    enum Answer {
        case promise(EventLoopPromise<[RESPValue]>)
        case continuation(UnsafeContinuation<[RESPValue], any Error>)

        func succeed(_ replies: [RESPValue]) {
            switch self {
            case .promise(let p): p.succeed(replies)
            case .continuation(let c): c.resume(returning: replies)
            }
        }

        func fail(_ error: any Error) {
            switch self {
            case .promise(let p): p.fail(error)
            case .continuation(let c): c.resume(throwing: error)
            }
        }
    }

    private struct Waiting {
        var count: Int
        var collected: [RESPValue]
        var answer: Answer
        var deadline: NIODeadline
    }

    /// A kept send buffer larger than this is let go (a bulk batch's), not held for the next.
    static let maxSpareBytes = 256 << 10

    private let replyTimeout: TimeAmount
    private var waiting: [Waiting] = []
    private var head = 0
    /// Armed for a deadline no later than the head's, while anything may be owed.
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    /// Closed, failed or taken out of the pipeline: a send now fails at once (its replies could
    /// never come, and nothing would fail it before its deadline).
    private var closed = false
    /// The last send's buffer: once the channel has written it, it is this handler's alone again
    /// and `takeBuffer` reuses its storage (while a write still holds it, clearing copies).
    private var spare: ByteBuffer?

    init(replyTimeout: TimeAmount) {
        self.replyTimeout = replyTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        closed = true
        self.context = nil
        spare = nil
        failAll(ChannelError.ioOnClosedChannel)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        enqueue(request.bytes, replies: request.replies, answer: .promise(request.promise), writePromise: promise)
    }

    /// A buffer to encode the next send into, on the channel's loop.
    func takeBuffer() -> ByteBuffer {
        guard var buffer = spare else {
            return context?.channel.allocator.buffer(capacity: 1024) ?? ByteBufferAllocator().buffer(capacity: 1024)
        }
        spare = nil
        buffer.clear()
        return buffer
    }

    /// Writes `bytes` and resumes `continuation` with their `replies` replies (or the error that
    /// ends the connection). On the channel's loop.
    func send(_ bytes: ByteBuffer, replies: Int, continuation: UnsafeContinuation<[RESPValue], any Error>) {
        // Kept for the next send only while there can be one (a closed handler lets it go).
        if !closed, bytes.capacity <= Self.maxSpareBytes { spare = bytes }
        enqueue(bytes, replies: replies, answer: .continuation(continuation), writePromise: nil)
    }

    private func enqueue(_ bytes: ByteBuffer, replies: Int, answer: Answer, writePromise: EventLoopPromise<Void>?) {
        guard !closed, let context else {
            answer.fail(ChannelError.ioOnClosedChannel)
            writePromise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        let deadline = context.eventLoop.now + replyTimeout
        // Waiting before the write: a write that fails closes the channel, which fails it.
        waiting.append(Waiting(count: replies, collected: [], answer: answer, deadline: deadline))
        if timer == nil { arm(context: context, at: deadline) }
        context.writeAndFlush(wrapOutboundOut(bytes), promise: writePromise)
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
        if waiting[head].collected.isEmpty { waiting[head].collected.reserveCapacity(waiting[head].count) }
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
            done.answer.succeed(done.collected)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        timer?.cancel()
        timer = nil
        failAll(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        closed = true
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: Error) {
        let pending = waiting[head...]
        waiting.removeAll()
        head = 0
        for p in pending { p.answer.fail(error) }
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
    private let handler: NIOLoopBound<RESPClientHandler>

    /// How long a command's replies may take, all of them, from the write.
    let replyTimeout: TimeAmount

    init(channel: Channel, handler: NIOLoopBound<RESPClientHandler>, replyTimeout: TimeAmount) {
        self.channel = channel
        self.handler = handler
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
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(
                try channel.pipeline.syncOperations.handler(type: RESPClientHandler.self), eventLoop: channel.eventLoop)
        }.get()
        return RedisConnection(channel: channel, handler: handler, replyTimeout: replyTimeout)
    }

    var isActive: Bool { channel.isActive }

    /// Sends the commands in one write and returns their replies, in order.
    func send(_ commands: [[[UInt8]]]) async throws -> [RESPValue] {
        try await send(replies: commands.count) { out in
            for c in commands { RESP.encodeCommand(c, into: &out) }
        }
    }

    /// Sends the commands `encode` writes and returns their `replies` replies, in order, within
    /// `replyTimeout`: past it the connection is closed (the replies still owed on it could no
    /// longer be matched) and the wait fails with `RedisReplyTimeout`.
    /// `queued` is called once the write is queued on the channel (writes queued one after the
    /// other reach redis in that order).
    func send(
        replies: Int, queued: () -> Void = {}, encode: (inout ByteBuffer) -> Void
    ) async throws -> [RESPValue] {
        let loop = channel.eventLoop
        if loop.inEventLoop {
            // A pipeline's task on this connection's loop: straight into the handler.
            let handler = self.handler.value
            var buffer = handler.takeBuffer()
            encode(&buffer)
            return try await withUnsafeThrowingContinuation { continuation in
                handler.send(buffer, replies: replies, continuation: continuation)
                queued()
            }
        }
        var buffer = channel.allocator.buffer(capacity: 1024)
        encode(&buffer)
        let promise = loop.makePromise(of: [RESPValue].self)
        let written = loop.makePromise(of: Void.self)
        written.futureResult.whenFailure { promise.fail($0) }  // closed before the write: never left
        // The reply deadline is the handler's (RESPClientHandler): from the write, replyTimeout.
        channel.writeAndFlush((bytes: buffer, replies: replies, promise: promise), promise: written)
        queued()
        return try await promise.futureResult.get()
    }

    func close() async {
        try? await channel.close()
    }
}
