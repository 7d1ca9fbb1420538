import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import SinkdCore
import SinkdTLS

/// Splits the byte stream into frames (bounded by the negotiated frame_max).
struct AMQPFrameByteDecoder: NIOSingleStepByteToMessageDecoder {
    typealias InboundOut = AMQPFrame
    let decoder = AMQPFrameDecoder()

    mutating func decode(buffer: inout ByteBuffer) throws -> AMQPFrame? {
        let decoded = try buffer.withUnsafeReadableBytes { try decoder.decode($0) }
        guard let (frame, used) = decoded else { return nil }
        buffer.moveReaderIndex(forwardBy: used)
        return frame
    }

    /// A partial frame at the end of the stream is dropped (the connection is gone).
    mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> AMQPFrame? {
        try decode(buffer: &buffer)
    }
}

/// The broker closed a channel: the reply code and text say why (406 PRECONDITION_FAILED for a
/// declaration that does not match the existing queue or exchange, 404 NOT_FOUND, 403 ...).
public struct AMQPChannelClosed: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: UInt16
    public var text: String
    public var classID: UInt16
    public var methodID: UInt16

    public var description: String { "RabbitMQ closed the channel (\(code)): \(text)" }
}

enum AMQPOutbound {
    case openChannel(declarations: [AMQPMethod], EventLoopPromise<UInt16>)
    /// Already encoded publishes on `channel`, one message-id each, in order.
    /// `confirmTimeout`: past it, without every confirm, the batch fails and its channel is closed.
    case publish(
        channel: UInt16, bytes: [UInt8], messageIDs: [String], confirmTimeout: TimeAmount,
        EventLoopPromise<[AMQPChannelStateMachine.Resolution]>)
    case closeChannel(UInt16)
}

/// A batch's publisher confirms did not all come in time (a broker or proxy that lost them).
public struct AMQPConfirmTimeout: Error, Sendable, Equatable, CustomStringConvertible {
    public var timeout: TimeAmount
    public var channel: UInt16
    public var description: String {
        "no publisher confirm within \(timeout.nanoseconds / 1_000_000) ms on channel \(channel); the channel was closed and the batch will be sent again"
    }
}

/// Executes the connection and channel state machines' actions on one TCP connection.
final class AMQPClientHandler: ChannelDuplexHandler {
    typealias InboundIn = AMQPFrame
    typealias OutboundIn = AMQPOutbound
    typealias OutboundOut = ByteBuffer

    private var machine: AMQPConnectionStateMachine
    private let connected: EventLoopPromise<AMQPConnectionStateMachine.Tuning>
    private let events: @Sendable (Event) -> Void
    private var channels: [UInt16: AMQPChannelStateMachine] = [:]
    private var opening: [UInt16: EventLoopPromise<UInt16>] = [:]
    private var batches:
        [UInt64: (
            results: [AMQPChannelStateMachine.Resolution?], remaining: Int, channel: UInt16,
            promise: EventLoopPromise<[AMQPChannelStateMachine.Resolution]>, deadline: Scheduled<Void>?
        )] = [:]
    private var nextBatch: UInt64 = 0
    private var heartbeat: RepeatedTask?
    private var failed = false
    /// Channels asked to close while publishes on them await confirms: closed once confirmed
    /// (closing earlier would lose the confirms and leave the batch waiting forever).
    private var closeWhenDrained: Set<UInt16> = []
    /// Channels sinkd closed whose close-ok has not come yet: their numbers are not reused.
    private var closingIDs: Set<UInt16> = []

    enum Event: Sendable {
        case blocked(String)
        case unblocked
        case failed(String)
    }

    init(
        machine: AMQPConnectionStateMachine, connected: EventLoopPromise<AMQPConnectionStateMachine.Tuning>,
        events: @escaping @Sendable (Event) -> Void
    ) {
        self.machine = machine
        self.connected = connected
        self.events = events
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(
            wrapOutboundOut(context.channel.allocator.buffer(bytes: AMQPFrame.protocolHeader)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        execute(machine.received(unwrapInboundIn(data), nowMillis: Self.nowMillis()), context: context)
    }

    private func execute(_ action: AMQPConnectionStateMachine.Action, context: ChannelHandlerContext) {
        switch action {
        case .none:
            break
        case .send(let frames):
            send(frames, context: context)
        case .opened(let tuning):
            if tuning.heartbeat > 0 {
                let interval = TimeAmount.milliseconds(Int64(tuning.heartbeat) * 500)
                let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                heartbeat = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
                    let (handler, context) = loopBound.value
                    handler.execute(handler.machine.heartbeatTick(nowMillis: Self.nowMillis()), context: context)
                }
            }
            connected.succeed(tuning)
        case .blocked(let reason):
            events(.blocked(reason))
        case .unblocked:
            events(.unblocked)
        case .channelFrame(let frame):
            channelFrame(frame, context: context)
        case .fail(let failure, let frames):
            if !frames.isEmpty { send(frames, context: context) }
            fail(failure, context: context)
        }
    }

    private func channelFrame(_ frame: AMQPFrame, context: ChannelHandlerContext) {
        if closingIDs.contains(frame.channel) {
            // What a closing channel still receives is dropped; its close-ok frees the number.
            if case .method(.channelCloseOk) = frame.payload { closingIDs.remove(frame.channel) }
            if case .method(.channelClose) = frame.payload {
                closingIDs.remove(frame.channel)
                send([AMQPFrame(channel: frame.channel, .method(.channelCloseOk))], context: context)
            }
            return
        }
        guard var channel = channels[frame.channel] else { return }  // a channel we already closed
        let action = channel.received(frame.payload)
        channels[frame.channel] = channel
        switch action {
        case .none:
            break
        case .send(let frames):
            send(frames, context: context)
        case .ready:
            opening.removeValue(forKey: frame.channel)?.succeed(frame.channel)
        case .resolved(let done):
            for (token, resolution) in done {
                guard var batch = batches[token.batch], batch.results[token.index] == nil else { continue }
                batch.results[token.index] = resolution
                batch.remaining -= 1
                if batch.remaining == 0 {
                    batches[token.batch] = nil
                    batch.deadline?.cancel()
                    batch.promise.succeed(batch.results.map { $0! })
                    closeIfDrained(batch.channel, context: context)
                } else {
                    batches[token.batch] = batch
                }
            }
        case .closed(let code, let text, let classID, let methodID, let frames):
            send(frames, context: context)
            let error = AMQPChannelClosed(code: code, text: text, classID: classID, methodID: methodID)
            channels[frame.channel] = nil
            closeWhenDrained.remove(frame.channel)
            opening.removeValue(forKey: frame.channel)?.fail(error)
            for (id, batch) in batches where batch.channel == frame.channel {
                batches[id] = nil
                batch.deadline?.cancel()
                batch.promise.fail(error)
            }
            if code == 505 {
                execute(machine.protocolError(AMQPProtocolError(text)), context: context)
            }
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        guard machine.isOpen, !failed else {
            let error = ChannelError.ioOnClosedChannel
            promise?.fail(error)
            switch request {
            case .openChannel(_, let p): p.fail(error)
            case .publish(_, _, _, _, let p): p.fail(error)
            case .closeChannel: break
            }
            return
        }
        switch request {
        case .openChannel(let declarations, let p):
            guard let id = freeChannelID() else {
                p.fail(
                    AMQPChannelClosed(
                        code: 0, text: "no free channel (channel_max \(machine.tuning?.channelMax ?? 0) reached)",
                        classID: 0, methodID: 0))
                promise?.succeed(())
                return
            }
            var channel = AMQPChannelStateMachine(id: id, declarations: declarations)
            let frames = channel.open()
            channels[id] = channel
            opening[id] = p
            send(frames, context: context, promise: promise)
        case .publish(let id, let bytes, let messageIDs, let confirmTimeout, let p):
            guard var channel = channels[id], channel.isReady else {
                p.fail(AMQPChannelClosed(code: 0, text: "the channel is not open", classID: 0, methodID: 0))
                promise?.succeed(())
                return
            }
            nextBatch += 1
            let batch = nextBatch
            _ = channel.published(
                messageIDs.enumerated().map {
                    (AMQPChannelStateMachine.Token(batch: batch, index: $0.offset), $0.element)
                })
            channels[id] = channel
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let deadline = context.eventLoop.scheduleTask(in: confirmTimeout) {
                let (handler, context) = loopBound.value
                handler.confirmsTimedOut(batch: batch, timeout: confirmTimeout, context: context)
            }
            batches[batch] = (Array(repeating: nil, count: messageIDs.count), messageIDs.count, id, p, deadline)
            context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: promise)
        case .closeChannel(let id):
            closeWhenDrained.insert(id)
            closeIfDrained(id, context: context)
            promise?.succeed(())
        }
    }

    /// A batch's confirms did not all come in time. Its channel can no longer be trusted (what
    /// the broker confirms from now on cannot be told from what it lost), so every batch on it
    /// fails (each is sent again, on a new channel) and the channel is closed; later frames on it
    /// are dropped until its close-ok. Other channels of the connection go on.
    private func confirmsTimedOut(batch: UInt64, timeout: TimeAmount, context: ChannelHandlerContext) {
        guard let timedOut = batches[batch] else { return }
        let id = timedOut.channel
        let error = AMQPConfirmTimeout(timeout: timeout, channel: id)
        for (other, b) in batches where b.channel == id {
            batches[other] = nil
            b.deadline?.cancel()
            b.promise.fail(error)
        }
        closeWhenDrained.remove(id)
        guard var channel = channels.removeValue(forKey: id) else { return }
        closingIDs.insert(id)
        send(channel.close(), context: context)
    }

    private func closeIfDrained(_ id: UInt16, context: ChannelHandlerContext) {
        guard closeWhenDrained.contains(id), !batches.values.contains(where: { $0.channel == id }) else { return }
        closeWhenDrained.remove(id)
        guard var channel = channels.removeValue(forKey: id) else { return }
        closingIDs.insert(id)
        send(channel.close(), context: context)
    }

    private func freeChannelID() -> UInt16? {
        let max = machine.tuning?.channelMax ?? 1
        for id in 1...max where channels[id] == nil && !closingIDs.contains(id) { return id }
        return nil
    }

    private func send(_ frames: [AMQPFrame], context: ChannelHandlerContext, promise: EventLoopPromise<Void>? = nil) {
        var bytes: [UInt8] = []
        for frame in frames { AMQPFrameEncoder.append(frame, to: &bytes) }
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(machine.failureOnEOF)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let error = error as? AMQPProtocolError {
            execute(machine.protocolError(error), context: context)
        } else {
            fail(error, context: context)
        }
    }

    /// Closes the connection politely (connection.close), then the socket; what still waits
    /// for confirms fails (it is sent again after a reconnect).
    func closeGracefully(context: ChannelHandlerContext) {
        if case .send(let frames) = machine.close() { send(frames, context: context) }
        failAll(ChannelError.ioOnClosedChannel)
        context.close(promise: nil)
    }

    private func fail(_ error: Error, context: ChannelHandlerContext) {
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: Error) {
        guard !failed else { return }
        failed = true
        heartbeat?.cancel()
        connected.fail(error)
        events(.failed("\(error)"))
        let waiting = opening
        opening.removeAll()
        for (_, p) in waiting { p.fail(error) }
        let pending = batches
        batches.removeAll()
        for (_, b) in pending {
            b.deadline?.cancel()
            b.promise.fail(error)
        }
        channels.removeAll()
    }

    static func nowMillis() -> UInt64 {
        MonotonicClock.millis()
    }
}

/// Where a broker is: `amqp://user:password@host:port/vhost` or `amqps://...` (TLS).
public struct AMQPBrokerAddress: Sendable, Equatable, CustomStringConvertible {
    public var host = "127.0.0.1"
    public var port = 5672
    public var tls = false
    public var user = "guest"
    public var password = "guest"
    public var virtualHost = "/"

    public init(url: String) throws(AMQPProtocolError) {
        var rest: Substring
        if url.hasPrefix("amqps://") {
            tls = true
            port = 5671
            rest = url.dropFirst("amqps://".count)
        } else if url.hasPrefix("amqp://") {
            rest = url.dropFirst("amqp://".count)
        } else {
            throw AMQPProtocolError("'\(Self.redacted(url))' is not an amqp:// or amqps:// URL")
        }
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !path.isEmpty {
                guard let decoded = PercentDecoding.decode(path) else {
                    throw AMQPProtocolError("'\(Self.redacted(url))': the vhost has an invalid percent-encoding")
                }
                virtualHost = decoded
            }
        }
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let parts = userInfo.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            user = PercentDecoding.decode(parts[0]) ?? String(parts[0])
            if parts.count == 2 { password = PercentDecoding.decode(parts[1]) ?? String(parts[1]) }
        }
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            rest = rest[rest.index(after: close)...]
            if rest.hasPrefix(":") {
                guard let p = Int(rest.dropFirst()), (1...65_535).contains(p) else {
                    throw AMQPProtocolError("'\(Self.redacted(url))': bad port")
                }
                port = p
            }
        } else if let colon = rest.lastIndex(of: ":") {
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65_535).contains(p) else {
                throw AMQPProtocolError("'\(Self.redacted(url))': bad port")
            }
            port = p
            host = String(rest[..<colon])
        } else if !rest.isEmpty {
            host = String(rest)
        }
        guard !host.isEmpty else { throw AMQPProtocolError("'\(Self.redacted(url))': no host") }
    }

    /// Never shows the password.
    public var description: String {
        "\(tls ? "amqps" : "amqp")://\(user)@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(virtualHost == "/" ? "%2f" : virtualHost)"
    }

    static func redacted(_ url: String) -> String {
        guard let at = url.lastIndex(of: "@"), let scheme = url.range(of: "://"), scheme.upperBound < at else {
            return url
        }
        let userInfo = url[scheme.upperBound..<at]
        let user = userInfo.split(separator: ":", maxSplits: 1).first.map(String.init) ?? ""
        return url[..<scheme.upperBound] + user + ":(hidden)" + url[at...]
    }
}

/// One open AMQP connection; channels are opened on it by the sinks' clients.
public final class AMQPConnection: Sendable {
    let channel: Channel
    public let broker: AMQPBrokerAddress
    public let tuning: AMQPConnectionStateMachine.Tuning
    private let state: NIOLockedValueBox<(blocked: String?, failure: String?)>

    init(
        channel: Channel, broker: AMQPBrokerAddress, tuning: AMQPConnectionStateMachine.Tuning,
        state: NIOLockedValueBox<(blocked: String?, failure: String?)>
    ) {
        self.channel = channel
        self.broker = broker
        self.tuning = tuning
        self.state = state
    }

    public var isActive: Bool { channel.isActive }
    /// connection.blocked's reason while the broker blocks publishing (a resource alarm).
    public var blockedReason: String? { state.withLockedValue { $0.blocked } }

    static func connect(
        to broker: AMQPBrokerAddress, tls: NIOSSLContext?, heartbeat: UInt16, version: String,
        group: EventLoopGroup, timeout: TimeAmount
    ) async throws -> AMQPConnection {
        let eventLoop = group.next()
        let opened = eventLoop.makePromise(of: AMQPConnectionStateMachine.Tuning.self)
        let state = NIOLockedValueBox<(blocked: String?, failure: String?)>((nil, nil))
        let machine = AMQPConnectionStateMachine(
            credentials: .init(user: broker.user, password: broker.password, virtualHost: broker.virtualHost),
            heartbeatSeconds: heartbeat, clientProperties: AMQPConnectionStateMachine.clientProperties(version: version)
        )
        let hostname: String? = tls != nil && !broker.host.isIPAddress ? broker.host : nil
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(timeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls {
                            try channel.pipeline.syncOperations.addHandler(
                                try NIOSSLClientHandler(context: tls, serverHostname: hostname))
                        }
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(AMQPFrameByteDecoder()))
                        try channel.pipeline.syncOperations.addHandler(
                            AMQPClientHandler(machine: machine, connected: opened) { event in
                                state.withLockedValue { s in
                                    switch event {
                                    case .blocked(let reason): s.blocked = reason
                                    case .unblocked: s.blocked = nil
                                    case .failed(let text): s.failure = text
                                    }
                                }
                            })
                    }
                }
                .connect(host: broker.host, port: broker.port).get()
        } catch {
            opened.fail(error)
            throw error
        }
        let timer = eventLoop.scheduleTask(in: timeout) {
            opened.fail(
                AMQPConnectionStateMachine.Failure.protocolViolation(
                    "no connection.open-ok within \(timeout.nanoseconds / 1_000_000_000) s"))
            channel.close(promise: nil)
        }
        defer { timer.cancel() }
        do {
            let tuning = try await opened.futureResult.get()
            return AMQPConnection(channel: channel, broker: broker, tuning: tuning, state: state)
        } catch {
            try? await channel.close()
            throw error
        }
    }

    /// Opens a channel in confirm mode and runs `declarations` on it; its number.
    /// Without an answer within `timeout` (a broker still recovering its queues after a crash can
    /// leave channel.open or a declaration unanswered) the connection is closed: the sink pauses
    /// and reconnects instead of waiting forever.
    public func openChannel(declarations: [AMQPMethod], timeout: TimeAmount = .seconds(30)) async throws -> UInt16 {
        let promise = channel.eventLoop.makePromise(of: UInt16.self)
        let channel = self.channel
        // The handler completes the promise (here: fails it with everything else it holds).
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            channel.pipeline.fireErrorCaught(
                AMQPConnectionStateMachine.Failure.protocolViolation(
                    "no answer to channel.open or a declaration within \(timeout.nanoseconds / 1_000_000_000) s"))
        }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        channel.writeAndFlush(AMQPOutbound.openChannel(declarations: declarations, promise)).cascadeFailure(to: promise)
        return try await promise.futureResult.get()
    }

    /// Writes encoded publishes and waits until the broker has confirmed (or returned) each.
    /// `queued` is called once the publishes are queued on the connection.
    /// Publishes on channel `id`; returns each message's confirm, or throws `AMQPConfirmTimeout`
    /// when they did not all come within `confirmTimeout`.
    public func publish(
        channel id: UInt16, bytes: [UInt8], messageIDs: [String], confirmTimeout: TimeAmount = .seconds(30),
        queued: () -> Void = {}
    ) async throws -> [AMQPChannelStateMachine.Resolution] {
        let promise = channel.eventLoop.makePromise(of: [AMQPChannelStateMachine.Resolution].self)
        channel.writeAndFlush(
            AMQPOutbound.publish(
                channel: id, bytes: bytes, messageIDs: messageIDs, confirmTimeout: confirmTimeout, promise)
        ).cascadeFailure(to: promise)
        queued()
        return try await promise.futureResult.get()
    }

    public func closeChannel(_ id: UInt16) {
        channel.writeAndFlush(AMQPOutbound.closeChannel(id), promise: nil)
    }

    public func close() async {
        let channel = self.channel
        try? await channel.eventLoop.submit {
            if let handler = try? channel.pipeline.syncOperations.handler(type: AMQPClientHandler.self),
                let context = try? channel.pipeline.syncOperations.context(handlerType: AMQPClientHandler.self)
            {
                handler.closeGracefully(context: context)
            } else {
                channel.close(promise: nil)
            }
        }.get()
    }
}
