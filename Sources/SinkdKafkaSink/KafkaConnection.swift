import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import SinkdCore

/// A request to send on a Kafka connection: the handler gives it its correlation id (in write
/// order, so responses, which a broker sends in request order, match by position and by id).
struct KafkaOutbound {
    enum Request {
        /// Built when written, for its correlation id.
        case build(@Sendable (Int32) -> [UInt8])
        /// Built ahead (off the event loop), framed; its id goes at `KafkaProduce.correlationIDOffset`.
        case framed([UInt8])
    }
    var request: Request
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
        let buffer: ByteBuffer
        switch request.request {
        case .build(let build):
            buffer = context.channel.allocator.buffer(bytes: build(correlation))
        case .framed(let bytes):
            var b = context.channel.allocator.buffer(bytes: bytes)
            b.setInteger(correlation, at: b.readerIndex + KafkaProduce.correlationIDOffset)
            buffer = b
        }
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        decoder.feed(buffer.readableBytesView)
        do {
            while let frame = try decoder.next() {
                guard head < waiting.count else {
                    throw KafkaConnectionError("the broker sent a response nobody asked for")
                }
                guard frame.count >= 4 else {
                    throw KafkaConnectionError("the broker sent a response shorter than its correlation id")
                }
                let correlation = frame.prefix(4).reduce(Int32(0)) { ($0 << 8) | Int32($1) }
                let expected = waiting[head]
                guard correlation == expected.correlation else {
                    throw KafkaConnectionError(
                        "the broker answered correlation id \(correlation) where \(expected.correlation) was next")
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
    /// When the broker ends the authenticated session (SaslAuthenticate's session lifetime,
    /// KIP-368): the connection is replaced before then.
    let renewBy: ContinuousClock.Instant?

    init(
        channel: Channel, broker: String, versions: [Int16: KafkaApiVersions.Range],
        renewBy: ContinuousClock.Instant? = nil
    ) {
        self.channel = channel
        self.broker = broker
        self.versions = versions
        self.renewBy = renewBy
    }

    /// Connects (TLS first when `tls` is given), asks ApiVersions, then authenticates with `sasl`.
    public static func connect(
        host: String, port: Int, clientID: String, group: EventLoopGroup, timeout: TimeAmount,
        tls: NIOSSLContext? = nil, sasl: KafkaSASLConfig? = nil
    ) async throws -> KafkaConnection {
        let serverHostname: String? = host.isIPAddress ? nil : host
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: tls, serverHostname: serverHostname))
                    }
                    try channel.pipeline.syncOperations.addHandler(KafkaClientHandler())
                }
            }
            .connect(host: host, port: port).get()
        let broker = "\(host):\(port)"
        let probe = KafkaConnection(channel: channel, broker: broker, versions: [:])
        do {
            let payload: [UInt8]
            do {
                payload = try await probe.request(timeout: timeout) {
                    KafkaApiVersions.request(correlationID: $0, clientID: clientID)
                }
            } catch {
                if tls != nil, error is NIOSSLError || !channel.isActive {
                    throw KafkaConnectionError(
                        "TLS with broker \(broker) failed: \(error) (check sinks.kafka.tls: ca_file, and that this listener speaks TLS)"
                    )
                }
                if !channel.isActive {
                    throw KafkaConnectionError(
                        "broker \(broker) closed the connection at ApiVersions (\(error)): a TLS listener? (sinks.kafka.tls)"
                    )
                }
                throw error
            }
            let response = try KafkaApiVersions.response(payload)
            guard response.errorCode == 0 else {
                throw KafkaConnectionError(
                    "broker \(broker) refused ApiVersions: \(KafkaErrorCode.name(response.errorCode))")
            }
            var renewBy: ContinuousClock.Instant?
            if let sasl {
                let authenticated = KafkaConnection(channel: channel, broker: broker, versions: response.versions)
                let lifetime = try await authenticated.authenticate(sasl, clientID: clientID, timeout: timeout)
                // Bounded before the arithmetic: a broker's answer may say anything (a day is far
                // beyond any real session; renewing once a day costs nothing).
                if lifetime > 0 { renewBy = .now + .milliseconds(min(lifetime, 86_400_000) * 85 / 100) }
            }
            return KafkaConnection(channel: channel, broker: broker, versions: response.versions, renewBy: renewBy)
        } catch {
            try? await channel.close()
            throw error
        }
    }

    /// SaslHandshake, then SaslAuthenticate until the exchange completes; the session lifetime
    /// (milliseconds, 0 = none).
    func authenticate(_ sasl: KafkaSASLConfig, clientID: String, timeout: TimeAmount) async throws -> Int64 {
        guard versions[KafkaSaslHandshake.apiKey] != nil,
            let version = version(KafkaSaslAuthenticate.apiKey, supported: KafkaSaslAuthenticate.versions)
        else {
            throw KafkaConnectionError(
                "broker \(broker) does not speak SaslHandshake v1 and SaslAuthenticate v0-v1 (a broker older than Kafka 1.0?)"
            )
        }
        let mechanism = sasl.mechanism.rawValue
        let handshake = try KafkaSaslHandshake.response(
            try await request(timeout: timeout) {
                KafkaSaslHandshake.request(correlationID: $0, clientID: clientID, mechanism: mechanism)
            })
        guard handshake.errorCode == 0 else {
            throw KafkaConnectionError(
                "broker \(broker) refused SASL mechanism \(mechanism): \(KafkaErrorCode.name(handshake.errorCode)); it offers \(handshake.mechanisms.isEmpty ? "none" : handshake.mechanisms.joined(separator: ", ")) (sinks.kafka.sasl.mechanism)"
            )
        }
        var authenticator = KafkaSaslAuthenticator(sasl)
        var token: [UInt8]? = authenticator.start()
        var lifetime: Int64 = 0
        while let sending = token {
            let answer = try KafkaSaslAuthenticate.response(
                try await request(timeout: timeout) {
                    KafkaSaslAuthenticate.request(
                        version: version, correlationID: $0, clientID: clientID, authBytes: sending)
                }, version: version)
            guard answer.errorCode == 0 else {
                throw KafkaConnectionError(
                    "broker \(broker) refused SASL \(mechanism) authentication of user \(sasl.username): \(KafkaErrorCode.name(answer.errorCode))\(answer.errorMessage.map { ": \($0)" } ?? "") (sinks.kafka.sasl)"
                )
            }
            lifetime = answer.sessionLifetimeMillis
            do {
                token = try authenticator.next(answer.authBytes)
            } catch {
                throw KafkaConnectionError("SASL \(mechanism) with broker \(broker): \(error)")
            }
        }
        return lifetime
    }

    public var isActive: Bool { channel.isActive }

    /// Active, and its authenticated session (if it has a lifetime) not about to end.
    var isUsable: Bool { channel.isActive && (renewBy.map { ContinuousClock.now < $0 } ?? true) }

    /// The highest version of `apiKey` both sides speak, within `supported`.
    public func version(_ apiKey: Int16, supported: ClosedRange<Int16>) -> Int16? {
        guard let range = versions[apiKey] else { return nil }
        let top = min(range.max, supported.upperBound)
        return top >= max(range.min, supported.lowerBound) ? top : nil
    }

    /// Sends one request (built with its correlation id) and returns the response frame's payload.
    /// No answer within `timeout` closes the connection (its other requests fail too: their
    /// outcome is then unknown, like this one's).
    public func request(timeout: TimeAmount, _ build: @escaping @Sendable (Int32) -> [UInt8]) async throws -> [UInt8] {
        try await enqueue(timeout: timeout, build).get()
    }

    /// Writes one request now (requests written from one thread, or under one lock, go on the
    /// wire in that order) and returns its answer's future, bounded as `request`'s.
    func enqueue(timeout: TimeAmount, _ build: @escaping @Sendable (Int32) -> [UInt8]) -> EventLoopFuture<[UInt8]> {
        enqueue(timeout: timeout, .build(build))
    }

    /// A framed request built ahead; the connection puts its correlation id in.
    func enqueue(timeout: TimeAmount, framed request: [UInt8]) -> EventLoopFuture<[UInt8]> {
        enqueue(timeout: timeout, .framed(request))
    }

    private func enqueue(timeout: TimeAmount, _ request: KafkaOutbound.Request) -> EventLoopFuture<[UInt8]> {
        let promise = channel.eventLoop.makePromise(of: [UInt8].self)
        let timer = channel.eventLoop.scheduleTask(in: timeout) { [channel, broker] in
            promise.fail(
                KafkaConnectionError("no answer from broker \(broker) within \(timeout.nanoseconds / 1_000_000) ms"))
            channel.close(promise: nil)
        }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        channel.writeAndFlush(KafkaOutbound(request: request, promise: promise)).whenFailure { promise.fail($0) }
        return promise.futureResult
    }

    func close(after delay: TimeAmount) {
        channel.eventLoop.scheduleTask(in: delay) { [channel] in channel.close(promise: nil) }
    }

    public func close() async {
        try? await channel.close()
    }
}
