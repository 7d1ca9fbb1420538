import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SinkdTLS

/// Splits the byte stream into server operations.
struct NATSDecoder: NIOSingleStepByteToMessageDecoder {
    typealias InboundOut = NATSServerOp
    let parser: NATSParser

    mutating func decode(buffer: inout ByteBuffer) throws -> NATSServerOp? {
        let parsed = try buffer.withUnsafeReadableBytes { try parser.parse($0) }
        guard let (op, used) = parsed else { return nil }
        buffer.moveReaderIndex(forwardBy: used)
        return op
    }

    /// A partial operation at the end of the stream is dropped (the connection is gone).
    mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> NATSServerOp? {
        try decode(buffer: &buffer)
    }
}

/// A reply to a request sent on this connection: its headers (HMSG) and payload, or nil when
/// none came in time.
public struct NATSReply: Sendable, Equatable {
    public var headers: [UInt8]?
    public var payload: [UInt8]

    /// The status of a header block `NATS/1.0 503` (no responders) or nil.
    public var status: Int? {
        guard let headers, headers.count >= 12 else { return nil }
        let line = headers.prefix { $0 != 13 }
        let parts = line.split(separator: 32)
        guard parts.count >= 2 else { return nil }
        return Int(String(decoding: parts[1], as: UTF8.self))
    }
}

/// What the handler is asked to write.
enum NATSOutbound {
    /// Bytes, then a PING whose PONG completes `promise` (or fails it with the -ERR seen meanwhile).
    case flushed([UInt8], EventLoopPromise<String?>)
    /// Requests (PUB/HPUB with reply subjects `<inbox>.<batch>.<index>`, already encoded with
    /// `batch`), completed with one reply per request, nil where none came within `timeout`.
    case requests([UInt8], batch: UInt64, count: Int, timeout: TimeAmount, EventLoopPromise<[NATSReply?]>)
}

/// Executes the state machine's actions on one channel; owns the outstanding pings and requests.
final class NATSClientHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = NATSServerOp
    typealias OutboundIn = NATSOutbound
    typealias OutboundOut = ByteBuffer

    private var machine: NATSConnectionStateMachine
    private let connectOptions: @Sendable (NATSServerInfo) throws -> NATSConnectOptions
    private let makeTLSHandler: (@Sendable () throws -> NIOSSLClientHandler)?
    private let inbox: String
    private let connected: EventLoopPromise<NATSServerInfo>
    private let events: @Sendable (NATSServerInfo) -> Void
    private var pings: [EventLoopPromise<String?>] = []
    private var pingHead = 0
    private var requests:
        [UInt64: (
            replies: [NATSReply?], remaining: Int, promise: EventLoopPromise<[NATSReply?]>, timer: Scheduled<Void>?
        )] = [:]
    private var closeWhenIdle = false
    /// Messages of subscriptions other than the inbox (benchmarks and tools subscribe).
    private let onMessage: (@Sendable (String, [UInt8]) -> Void)?

    init(
        tlsWanted: Bool, inbox: String, connected: EventLoopPromise<NATSServerInfo>,
        connectOptions: @escaping @Sendable (NATSServerInfo) throws -> NATSConnectOptions,
        makeTLSHandler: (@Sendable () throws -> NIOSSLClientHandler)?,
        events: @escaping @Sendable (NATSServerInfo) -> Void, onMessage: (@Sendable (String, [UInt8]) -> Void)? = nil
    ) {
        self.onMessage = onMessage
        self.machine = NATSConnectionStateMachine(tlsWanted: tlsWanted)
        self.inbox = inbox
        self.connected = connected
        self.connectOptions = connectOptions
        self.makeTLSHandler = makeTLSHandler
        self.events = events
    }

    var outstanding: Int { (pings.count - pingHead) + requests.count }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        execute(machine.received(unwrapInboundIn(data), atNanos: NIODeadline.now().uptimeNanoseconds), context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            execute(machine.tlsEstablished(), context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func execute(_ action: NATSConnectionStateMachine.Action, context: ChannelHandlerContext) {
        switch action {
        case .none:
            break
        case .startTLS:
            do {
                guard let makeTLSHandler else {
                    throw NATSConnectionStateMachine.Failure.tlsMismatch("TLS requested without a TLS configuration")
                }
                try context.pipeline.syncOperations.addHandler(try makeTLSHandler(), position: .first)
            } catch {
                fail(error, context: context)
            }
        case .sendConnect(let info):
            do {
                var bytes: [UInt8] = []
                NATSEncoder.connect(try connectOptions(info), into: &bytes)
                NATSEncoder.sub(subject: inbox + ".>", sid: "1", into: &bytes)
                bytes.append(contentsOf: NATSEncoder.ping)
                context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: nil)
            } catch {
                fail(error, context: context)
            }
        case .connected(let info):
            connected.succeed(info)
        case .sendPong:
            let written = context.eventLoop.makePromise(of: Void.self)
            written.futureResult.assumeIsolated().whenComplete { [weak self] _ in self?.machine.pongWritten() }
            context.writeAndFlush(
                wrapOutboundOut(context.channel.allocator.buffer(bytes: NATSEncoder.pong)), promise: written)
        case .pingAnswered(let error):
            guard pingHead < pings.count else { break }
            let promise = pings[pingHead]
            pingHead += 1
            if pingHead > 64, pingHead * 2 > pings.count {
                pings.removeFirst(pingHead)
                pingHead = 0
            }
            promise.succeed(error)
            closeIfIdle(context: context)
        case .reply(let subject, let headers, let payload):
            guard let (batch, index) = Self.token(subject, inbox: inbox) else {
                onMessage?(subject, payload)
                break
            }
            guard var pending = requests[batch], index < pending.replies.count, pending.replies[index] == nil else {
                break
            }
            pending.replies[index] = NATSReply(headers: headers, payload: payload)
            pending.remaining -= 1
            if pending.remaining == 0 {
                requests[batch] = nil
                pending.timer?.cancel()
                pending.promise.succeed(pending.replies)
                closeIfIdle(context: context)
            } else {
                requests[batch] = pending
            }
        case .infoUpdated(let info):
            events(info)
        case .close(let failure):
            fail(failure, context: context)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard machine.isReady else {
            let error = ChannelError.ioOnClosedChannel
            promise?.fail(error)
            switch unwrapOutboundIn(data) {
            case .flushed(_, let p): p.fail(error)
            case .requests(_, _, _, _, let p): p.fail(error)
            }
            return
        }
        switch unwrapOutboundIn(data) {
        case .flushed(var bytes, let p):
            bytes.append(contentsOf: NATSEncoder.ping)
            machine.pingSent()
            pings.append(p)
            context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: promise)
        case .requests(let bytes, let batch, let count, let timeout, let p):
            let timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
                guard let self, let pending = self.requests.removeValue(forKey: batch) else { return }
                pending.promise.succeed(pending.replies)
            }
            requests[batch] = (Array(repeating: nil, count: count), count, p, timer)
            context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: promise)
        }
    }

    /// Lame duck: finish what is outstanding, then close.
    func drainAndClose(context: ChannelHandlerContext) {
        closeWhenIdle = true
        closeIfIdle(context: context)
    }

    private func closeIfIdle(context: ChannelHandlerContext) {
        if closeWhenIdle, outstanding == 0 { context.close(promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let error = error as? NATSProtocolError {
            execute(machine.protocolError(error), context: context)
        } else {
            fail(error, context: context)
        }
    }

    private func fail(_ error: Error, context: ChannelHandlerContext) {
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: Error) {
        connected.fail(error)
        let waiting = pings[pingHead...]
        pings.removeAll()
        pingHead = 0
        for p in waiting { p.fail(error) }
        let pending = requests
        requests.removeAll()
        for (_, r) in pending {
            r.timer?.cancel()
            r.promise.fail(error)
        }
    }

    /// `<inbox>.<batch>.<index>` → (batch, index), read from the bytes (once per reply).
    static func token(_ subject: String, inbox: String) -> (UInt64, Int)? {
        guard subject.utf8.starts(with: inbox.utf8) else { return nil }
        var subject = subject
        return subject.withUTF8 { bytes -> (UInt64, Int)? in
            let prefix = inbox.utf8.count
            guard bytes.count > prefix + 3, bytes[prefix] == UInt8(ascii: ".") else { return nil }
            var batch: UInt64 = 0
            var index = 0
            var i = prefix + 1
            var digits = 0
            while i < bytes.count, bytes[i] != UInt8(ascii: ".") {
                guard bytes[i] >= 48, bytes[i] <= 57, digits < 19 else { return nil }
                batch = batch * 10 + UInt64(bytes[i] - 48)
                digits += 1
                i += 1
            }
            guard digits > 0, i < bytes.count else { return nil }
            i += 1
            digits = 0
            while i < bytes.count {
                guard bytes[i] >= 48, bytes[i] <= 57, digits < 18 else { return nil }
                index = index * 10 + Int(bytes[i] - 48)
                digits += 1
                i += 1
            }
            return digits > 0 ? (batch, index) : nil
        }
    }
}

/// One established connection to a NATS server.
public final class NATSConnection: Sendable {
    let channel: Channel
    public let server: NATSServerAddress
    public let inbox: String
    private let state: NIOLockedValueBox<(info: NATSServerInfo, lameDuck: Bool, nextBatch: UInt64)>

    init(channel: Channel, server: NATSServerAddress, inbox: String, info: NATSServerInfo) {
        self.channel = channel
        self.server = server
        self.inbox = inbox
        self.state = NIOLockedValueBox((info, info.lameDuckMode, 0))
    }

    public var info: NATSServerInfo { state.withLockedValue { $0.info } }
    /// Open and not in lame-duck mode: new work may go here.
    public var isUsable: Bool { channel.isActive && !state.withLockedValue { $0.lameDuck } }

    /// Connects, upgrades to TLS when asked, authenticates, subscribes to the inbox.
    /// `onInfo` hears later INFOs (cluster members, lame-duck mode).
    /// `parser`: what one server operation may hold. The sink's connections get replies only
    /// (PubAcks, API answers: small), so a MSG of more than 1 MiB is refused there rather than
    /// buffered; tools that subscribe (`onMessage`) pass the protocol's own limits.
    static func connect(
        to server: NATSServerAddress, tls: NIOSSLContext?, tlsWanted: Bool, group: EventLoopGroup, timeout: TimeAmount,
        options: @escaping @Sendable (NATSServerInfo) throws -> NATSConnectOptions,
        onInfo: @escaping @Sendable (NATSServerInfo) -> Void,
        onMessage: (@Sendable (String, [UInt8]) -> Void)? = nil,
        parser: NATSParser = NATSParser(maxControlLine: 64 << 10, maxMessage: 1 << 20)
    ) async throws -> NATSConnection {
        let inbox = "_INBOX." + randomToken()
        let eventLoop = group.next()
        let handshake = eventLoop.makePromise(of: NATSServerInfo.self)
        let connection = NIOLockedValueBox<NATSConnection?>(nil)
        let host = server.host
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(timeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    let makeTLS = tlsHandlerMaker(tls, host: host)
                    let onInfo: @Sendable (NATSServerInfo) -> Void = { info in
                        connection.withLockedValue { $0 }?.update(info)
                        onInfo(info)
                    }
                    return channel.eventLoop.makeCompletedFuture {
                        let handler = NATSClientHandler(
                            tlsWanted: tlsWanted, inbox: inbox, connected: handshake, connectOptions: options,
                            makeTLSHandler: makeTLS, events: onInfo, onMessage: onMessage)
                        try channel.pipeline.syncOperations.addHandler(
                            ByteToMessageHandler(NATSDecoder(parser: parser)))
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
                .connect(host: server.host, port: server.port).get()
        } catch {
            handshake.fail(error)
            throw error
        }
        let timer = eventLoop.scheduleTask(in: timeout) {
            handshake.fail(
                NATSConnectionStateMachine.Failure.server(
                    "no answer to CONNECT within \(timeout.nanoseconds / 1_000_000_000) s"))
            channel.close(promise: nil)
        }
        defer { timer.cancel() }
        let info: NATSServerInfo
        do {
            info = try await handshake.futureResult.get()
        } catch {
            try? await channel.close()
            throw error
        }
        let made = NATSConnection(channel: channel, server: server, inbox: inbox, info: info)
        connection.withLockedValue { $0 = made }
        return made
    }

    private static func tlsHandlerMaker(
        _ tls: NIOSSLContext?, host: String
    ) -> (@Sendable () throws -> NIOSSLClientHandler)? {
        guard let tls else { return nil }
        let hostname: String? = host.isIPAddress ? nil : host
        return { try NIOSSLClientHandler(context: tls, serverHostname: hostname) }
    }

    private func update(_ info: NATSServerInfo) {
        let enteredLameDuck = state.withLockedValue { s -> Bool in
            let was = s.lameDuck
            s.info = info
            s.lameDuck = was || info.lameDuckMode
            return !was && info.lameDuckMode
        }
        if enteredLameDuck {
            channel.eventLoop.execute {
                if let handler = try? self.channel.pipeline.syncOperations.handler(type: NATSClientHandler.self),
                    let context = try? self.channel.pipeline.syncOperations.context(handlerType: NATSClientHandler.self)
                {
                    handler.drainAndClose(context: context)
                }
            }
        }
    }

    /// Writes `bytes` and a PING; returns when the PONG came (the server processed everything
    /// before it): the non-fatal -ERR seen meanwhile, or nil.
    /// `queued` is called once the write is queued on the channel.
    public func flush(_ bytes: [UInt8], timeout: TimeAmount, queued: () -> Void = {}) async throws -> String? {
        let promise = channel.eventLoop.makePromise(of: String?.self)
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { promise.fail($0) }
        let timer = channel.eventLoop.scheduleTask(in: timeout) { [channel] in
            promise.fail(
                NATSConnectionStateMachine.Failure.server("no PONG within \(timeout.nanoseconds / 1_000_000_000) s"))
            channel.close(promise: nil)
        }
        channel.writeAndFlush(NATSOutbound.flushed(bytes, promise), promise: written)
        queued()
        defer { timer.cancel() }
        return try await promise.futureResult.get()
    }

    /// A batch number for `requests`: reply subjects are `<inbox>.<batch>.<index>`.
    public func nextBatch() -> UInt64 {
        state.withLockedValue { s in
            s.nextBatch += 1
            return s.nextBatch
        }
    }

    /// Writes already encoded requests of `batch`; returns one reply per request (nil: none
    /// within `timeout`).
    public func requests(
        _ bytes: [UInt8], batch: UInt64, count: Int, timeout: TimeAmount, queued: () -> Void = {}
    ) async throws -> [NATSReply?] {
        let promise = channel.eventLoop.makePromise(of: [NATSReply?].self)
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { promise.fail($0) }
        channel.writeAndFlush(
            NATSOutbound.requests(bytes, batch: batch, count: count, timeout: timeout, promise), promise: written)
        queued()
        return try await promise.futureResult.get()
    }

    public func close() async {
        try? await channel.close()
    }

    static func randomToken() -> String {
        let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)
        var generator = SystemRandomNumberGenerator()
        return String(
            decoding: (0..<22).map { _ in alphabet[Int(generator.next(upperBound: UInt64(alphabet.count)))] },
            as: UTF8.self)
    }
}
