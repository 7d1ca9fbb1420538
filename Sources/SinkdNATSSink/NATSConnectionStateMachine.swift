/// One NATS connection's protocol logic, free of I/O: server operations go in, actions for the
/// channel handler come out (shared/STYLE.md, after postgres-nio's connection state machine).
///
///     awaitingInfo ──INFO──▶ (startTLS ─▶ awaitingTLS ──handshake──▶) awaitingConnectReply
///     awaitingConnectReply ──PONG──▶ ready        (CONNECT was followed by a PING)
///     any ──-ERR (fatal) / protocol error──▶ closed
///
/// Invariants:
/// - CONNECT is sent exactly once, after INFO (and after the TLS handshake when TLS is used).
/// - In `ready`, every PONG answers the oldest PING we sent; a -ERR that does not close the
///   connection (a permissions violation) is attached to the next answered PING, so the batch
///   whose PUBs caused it is not counted delivered.
public struct NATSConnectionStateMachine: Sendable {
    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        /// The server refused our credentials (the sink pauses; logged once).
        case authorization(String)
        /// TLS wanted by sinkd and not offered by the server.
        case tlsMismatch(String)
        /// The server said -ERR and closes the connection.
        case server(String)
        case protocolViolation(String)

        public var description: String {
            switch self {
            case .authorization(let m): "nats refused the credentials: \(m)"
            case .tlsMismatch(let m): m
            case .server(let m): "nats closed the connection: \(m)"
            case .protocolViolation(let m): "nats protocol error: \(m)"
            }
        }
    }

    public enum Action: Sendable, Equatable {
        case none
        /// Upgrade the connection to TLS, then call `tlsEstablished()`.
        case startTLS
        /// Send CONNECT (built for this INFO: its nonce), the inbox SUB and a PING.
        case sendConnect(NATSServerInfo)
        /// The handshake finished: the connection is usable.
        case connected(NATSServerInfo)
        case sendPong
        /// The oldest PING was answered; `error` is a non-fatal -ERR seen since the previous PONG.
        case pingAnswered(error: String?)
        /// A message for our inbox.
        case reply(subject: String, headers: [UInt8]?, payload: [UInt8])
        /// An INFO after the handshake: new cluster members, or lame-duck mode.
        case infoUpdated(NATSServerInfo)
        /// Fail everything outstanding and close.
        case close(Failure)
    }

    enum State: Sendable, Equatable {
        case awaitingInfo
        case awaitingTLS(NATSServerInfo)
        case awaitingConnectReply(NATSServerInfo)
        case ready(NATSServerInfo)
        case closed
    }

    private(set) var state: State = .awaitingInfo
    private let tlsWanted: Bool
    private var pendingPings = 0
    private var softError: String?
    /// A PONG was handed to the channel and has not reached the socket yet.
    private var pongUnwritten = false
    private var pingWindowStart: UInt64 = 0
    private var pingsInWindow = 0
    /// Nanoseconds of a monotonic clock, for the PING flood limit (the handler passes its clock).
    private var now: UInt64 = 0

    /// A real server PINGs every couple of minutes; more than this within a second is a flood.
    public static let maxPingsPerSecond = 100

    public init(tlsWanted: Bool) {
        self.tlsWanted = tlsWanted
    }

    public var isReady: Bool {
        if case .ready = state { return true }
        return false
    }

    public var outstandingPings: Int { pendingPings }

    public mutating func received(_ op: NATSServerOp) -> Action {
        switch (state, op) {
        case (.closed, _):
            return .none
        case (_, .ping):
            // One PONG at a time: a PONG still unwritten answers the PINGs behind it too (the
            // server only counts PINGs without an answer), so a server that PINGs and stops
            // reading cannot make us queue PONGs without bound.
            if now &- pingWindowStart >= 1_000_000_000 {
                pingWindowStart = now
                pingsInWindow = 0
            }
            pingsInWindow += 1
            guard pingsInWindow <= Self.maxPingsPerSecond else {
                state = .closed
                return .close(
                    .protocolViolation("the server sent more than \(Self.maxPingsPerSecond) PINGs within a second"))
            }
            guard !pongUnwritten else { return .none }
            pongUnwritten = true
            return .sendPong
        case (.awaitingInfo, .info(let info)):
            // A server that requires TLS gets it even when not asked for (default trust roots).
            if tlsWanted || info.tlsRequired {
                guard info.tlsRequired || info.tlsAvailable else {
                    state = .closed
                    return .close(
                        .tlsMismatch(
                            "TLS is configured (a tls:// server or sinks.nats.tls) but the nats server does not offer it"
                        ))
                }
                state = .awaitingTLS(info)
                return .startTLS
            }
            state = .awaitingConnectReply(info)
            return .sendConnect(info)
        case (.awaitingInfo, _), (.awaitingTLS, _):
            state = .closed
            return .close(.protocolViolation("expected INFO first, got \(op)"))
        case (.awaitingConnectReply(let info), .pong):
            state = .ready(info)
            return .connected(info)
        case (.awaitingConnectReply, .ok):
            return .none
        case (.awaitingConnectReply, .err(let message)):
            state = .closed
            let lower = message.lowercased()
            if lower.contains("authorization") || lower.contains("authentication")
                || lower.contains("user authentication")
            {
                return .close(.authorization(message))
            }
            return .close(.server(message))
        case (.awaitingConnectReply, .info(let info)):
            state = .awaitingConnectReply(info)
            return .none
        case (.awaitingConnectReply, _):
            state = .closed
            return .close(.protocolViolation("unexpected \(op) before the CONNECT was answered"))
        case (.ready, .pong):
            guard pendingPings > 0 else { return .none }  // a PONG nobody asked for: harmless
            pendingPings -= 1
            defer { softError = nil }
            return .pingAnswered(error: softError)
        case (.ready, .ok):
            return .none
        case (.ready, .err(let message)):
            // Per the protocol only these leave the connection open.
            let lower = message.lowercased()
            if lower.hasPrefix("permissions violation") || lower.hasPrefix("invalid subject") {
                softError = message
                return .none
            }
            state = .closed
            if lower.contains("authorization") { return .close(.authorization(message)) }
            return .close(.server(message))
        case (.ready, .info(let info)):
            state = .ready(info)
            return .infoUpdated(info)
        case (.ready, .message(let subject, _, _, let headers, let payload)):
            return .reply(subject: subject, headers: headers, payload: payload)
        }
    }

    /// The TLS handshake succeeded; CONNECT may be sent.
    public mutating func tlsEstablished() -> Action {
        guard case .awaitingTLS(let info) = state else { return .none }
        state = .awaitingConnectReply(info)
        return .sendConnect(info)
    }

    /// `op` received at `nanos` of a monotonic clock.
    public mutating func received(_ op: NATSServerOp, atNanos nanos: UInt64) -> Action {
        now = nanos
        return received(op)
    }

    /// The PONG of `sendPong` reached the socket (or its write failed): the next PING gets one.
    public mutating func pongWritten() {
        pongUnwritten = false
    }

    /// Records a PING written after the handshake (its PONG completes the oldest).
    public mutating func pingSent() {
        pendingPings += 1
    }

    /// The bytes could not be parsed.
    public mutating func protocolError(_ error: NATSProtocolError) -> Action {
        guard state != .closed else { return .none }
        state = .closed
        return .close(.protocolViolation(error.description))
    }
}
