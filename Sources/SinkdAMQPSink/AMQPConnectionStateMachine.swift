/// One AMQP connection's protocol logic (channel 0), free of I/O: frames go in, actions for the
/// channel handler come out (shared/STYLE.md).
///
///     awaitingStart ──start──▶ (start-ok) awaitingTune ──tune──▶ (tune-ok, open) awaitingOpenOk
///     awaitingOpenOk ──open-ok──▶ open ──close──▶ (close-ok) closed
///
/// Invariants:
/// - Frames on channels other than 0 are routed only once the connection is open.
/// - The negotiated frame_max and channel_max never exceed what the server offered; heartbeat
///   is the smaller non-zero of the two proposals (0 only if both are 0).
/// - `blocked` is set between connection.blocked and connection.unblocked.
public struct AMQPConnectionStateMachine: Sendable {
    public struct Credentials: Sendable, Equatable {
        public var user: String
        public var password: String
        public var virtualHost: String

        public init(user: String, password: String, virtualHost: String) {
            self.user = user
            self.password = password
            self.virtualHost = virtualHost
        }
    }

    public struct Tuning: Sendable, Equatable {
        public var channelMax: UInt16
        public var frameMax: UInt32
        /// Seconds; 0 = off.
        public var heartbeat: UInt16
    }

    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        /// ACCESS_REFUSED (403) at connection.open or start: credentials or vhost permissions.
        case refused(code: UInt16, text: String)
        /// connection.close from the server.
        case closedByServer(code: UInt16, text: String)
        case missedHeartbeats(seconds: Int)
        case protocolViolation(String)

        public var description: String {
            switch self {
            case .refused(let code, let text): "RabbitMQ refused the connection (\(code)): \(text)"
            case .closedByServer(let code, let text): "RabbitMQ closed the connection (\(code)): \(text)"
            case .missedHeartbeats(let s): "no frame from RabbitMQ for \(s) s (missed heartbeats)"
            case .protocolViolation(let m): "AMQP protocol error: \(m)"
            }
        }
    }

    public enum Action: Sendable, Equatable {
        case none
        case send([AMQPFrame])
        /// The handshake finished.
        case opened(Tuning)
        case blocked(String)
        case unblocked
        /// A frame for channel N.
        case channelFrame(AMQPFrame)
        /// Send these frames (close-ok), then fail everything and close.
        case fail(Failure, send: [AMQPFrame])
    }

    enum State: Sendable, Equatable {
        case awaitingStart
        case awaitingTune
        case awaitingOpenOk(Tuning)
        case open(Tuning)
        case closed
    }

    private(set) var state: State = .awaitingStart
    let credentials: Credentials
    let requestedHeartbeat: UInt16
    let clientProperties: AMQPTable
    public private(set) var blockedReason: String?
    private var lastReceivedMillis: UInt64 = 0

    public init(credentials: Credentials, heartbeatSeconds: UInt16, clientProperties: AMQPTable) {
        self.credentials = credentials
        self.requestedHeartbeat = heartbeatSeconds
        self.clientProperties = clientProperties
    }

    public var tuning: Tuning? {
        switch state {
        case .open(let t), .awaitingOpenOk(let t): t
        default: nil
        }
    }

    public var isOpen: Bool {
        if case .open = state { return true }
        return false
    }

    /// What sinkd sends in connection.start-ok's client-properties: the capabilities it handles.
    public static func clientProperties(version: String) -> AMQPTable {
        [
            "product": .string("sinkd"),
            "version": .string(version),
            "platform": .string("Swift"),
            "capabilities": .table([
                "publisher_confirms": .bool(true),
                "basic.nack": .bool(true),
                "connection.blocked": .bool(true),
                "authentication_failure_close": .bool(true),
            ]),
        ]
    }

    public mutating func received(_ frame: AMQPFrame, nowMillis: UInt64) -> Action {
        lastReceivedMillis = nowMillis
        if state == .closed { return .none }
        if case .heartbeat = frame.payload { return .none }
        guard frame.channel == 0 else {
            guard isOpen else {
                return fail(.protocolViolation("a frame for channel \(frame.channel) before the connection was open"))
            }
            return .channelFrame(frame)
        }
        guard case .method(let method) = frame.payload else {
            return fail(.protocolViolation("a content frame on channel 0"))
        }
        switch (state, method) {
        case (.awaitingStart, .connectionStart(_, _, _, let mechanisms, _)):
            guard mechanisms.split(separator: " ").contains("PLAIN") else {
                return fail(.protocolViolation("the server offers no PLAIN authentication (it offers: \(mechanisms))"))
            }
            state = .awaitingTune
            var response: [UInt8] = [0]
            response += Array(credentials.user.utf8)
            response.append(0)
            response += Array(credentials.password.utf8)
            return .send([
                AMQPFrame(
                    channel: 0,
                    .method(
                        .connectionStartOk(
                            clientProperties: clientProperties, mechanism: "PLAIN", response: response, locale: "en_US")
                    ))
            ])
        case (.awaitingTune, .connectionTune(let channelMax, let frameMax, let heartbeat)):
            let tuning = Tuning(
                channelMax: channelMax == 0 ? 2047 : min(channelMax, 2047),
                frameMax: frameMax == 0 ? 131_072 : min(frameMax, 131_072),
                heartbeat: Self.negotiate(heartbeat, requestedHeartbeat))
            state = .awaitingOpenOk(tuning)
            return .send([
                AMQPFrame(
                    channel: 0,
                    .method(
                        .connectionTuneOk(
                            channelMax: tuning.channelMax, frameMax: tuning.frameMax, heartbeat: tuning.heartbeat))),
                AMQPFrame(channel: 0, .method(.connectionOpen(virtualHost: credentials.virtualHost))),
            ])
        case (.awaitingOpenOk(let tuning), .connectionOpenOk):
            state = .open(tuning)
            return .opened(tuning)
        case (_, .connectionClose(let code, let text, _, _)):
            let opening = !isOpen
            state = .closed
            let closeOk = [AMQPFrame(channel: 0, .method(.connectionCloseOk))]
            // 403 ACCESS_REFUSED, 530 NOT_ALLOWED (vhost) during the handshake: the credentials.
            if opening || code == 403 || code == 530 { return .fail(.refused(code: code, text: text), send: closeOk) }
            return .fail(.closedByServer(code: code, text: text), send: closeOk)
        case (.open, .connectionBlocked(let reason)):
            blockedReason = reason.isEmpty ? "resource alarm" : reason
            return .blocked(blockedReason!)
        case (.open, .connectionUnblocked):
            blockedReason = nil
            return .unblocked
        case (_, .connectionCloseOk):
            state = .closed
            return .fail(.closedByServer(code: 200, text: "closed"), send: [])
        default:
            return fail(.protocolViolation("unexpected \(method) on channel 0"))
        }
    }

    /// The server closed the TCP connection during the handshake: RabbitMQ does that when it
    /// refuses the credentials of a client without authentication_failure_close.
    public var failureOnEOF: Failure {
        switch state {
        case .awaitingTune, .awaitingOpenOk:
            .refused(code: 403, text: "the connection was closed during the handshake (wrong user, password or vhost?)")
        default: .closedByServer(code: 0, text: "the connection was closed")
        }
    }

    /// Called every heartbeat/2 seconds once open: a heartbeat frame to send, or a failure when
    /// nothing arrived for two heartbeat intervals (not while blocked: a blocking broker does not
    /// read, and may not write either).
    public mutating func heartbeatTick(nowMillis: UInt64) -> Action {
        guard case .open(let tuning) = state, tuning.heartbeat > 0 else { return .none }
        if blockedReason == nil, nowMillis > lastReceivedMillis + 2 * UInt64(tuning.heartbeat) * 1000 {
            return fail(.missedHeartbeats(seconds: 2 * Int(tuning.heartbeat)))
        }
        return .send([AMQPFrame(channel: 0, .heartbeat)])
    }

    /// The client closes: connection.close, then the server's close-ok.
    public mutating func close() -> Action {
        guard isOpen else { return .none }
        state = .closed
        return .send([
            AMQPFrame(
                channel: 0,
                .method(.connectionClose(replyCode: 200, replyText: "sinkd closing", classID: 0, methodID: 0)))
        ])
    }

    public mutating func protocolError(_ error: AMQPProtocolError) -> Action {
        fail(.protocolViolation(error.description))
    }

    private mutating func fail(_ failure: Failure) -> Action {
        guard state != .closed else { return .none }
        state = .closed
        if case .protocolViolation(let text) = failure {
            // 505 UNEXPECTED_FRAME / 501 FRAME_ERROR: tell the server before closing.
            return .fail(
                failure,
                send: [
                    AMQPFrame(
                        channel: 0,
                        .method(
                            .connectionClose(
                                replyCode: 505, replyText: String(text.prefix(200)), classID: 0, methodID: 0)))
                ])
        }
        return .fail(failure, send: [])
    }

    static func negotiate(_ server: UInt16, _ client: UInt16) -> UInt16 {
        if server == 0 || client == 0 { return max(server, client) }
        return min(server, client)
    }
}
