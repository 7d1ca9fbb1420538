/// One AMQP channel used for publishing with confirms, free of I/O.
///
///     opening ──open-ok──▶ (confirm.select) selecting ──select-ok──▶ (declare…) declaring ──ok…──▶ ready
///     any ──channel.close──▶ (close-ok) closed(code, text)
///
/// Invariants:
/// - Delivery tags are 1, 2, 3… in publish order from confirm.select on; each published message
///   has exactly one tag and is resolved exactly once, by basic.ack (delivered, or unroutable
///   when a basic.return for it came first) or basic.nack (retry), with or without `multiple`.
/// - A basic.return precedes the ack of the same message (RabbitMQ's order); it is matched to the
///   oldest unresolved message with the same message-id (sinkd sets message-id = record id).
/// - Declarations are sent one at a time, each after the previous one's -ok.
public struct AMQPChannelStateMachine: Sendable {
    /// Who waits for a published message: a batch and the record's index in it.
    public struct Token: Sendable, Equatable, Hashable {
        public var batch: UInt64
        public var index: Int

        public init(batch: UInt64, index: Int) {
            self.batch = batch
            self.index = index
        }
    }

    public enum Resolution: Sendable, Equatable {
        case acked
        case nacked
        /// Acked after a basic.return: the broker could not route it (mandatory).
        case returned(code: UInt16, text: String)
    }

    public enum Action: Sendable, Equatable {
        case none
        case send([AMQPFrame])
        /// Confirms enabled and every declaration done: publishing may start.
        case ready
        case resolved([(Token, Resolution)])
        /// The broker closed the channel (a refused declaration, a publish to a missing
        /// exchange, ...): close-ok is to be sent; everything unresolved fails with this.
        case closed(code: UInt16, text: String, classID: UInt16, methodID: UInt16, send: [AMQPFrame])

        public static func == (a: Action, b: Action) -> Bool {
            switch (a, b) {
            case (.none, .none), (.ready, .ready): true
            case (.send(let x), .send(let y)): x == y
            case (.resolved(let x), .resolved(let y)):
                x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
            case (.closed(let c1, let t1, let k1, let m1, let s1), .closed(let c2, let t2, let k2, let m2, let s2)):
                c1 == c2 && t1 == t2 && k1 == k2 && m1 == m2 && s1 == s2
            default: false
            }
        }
    }

    enum State: Sendable, Equatable {
        case opening
        case selecting
        case declaring(remaining: Int)
        case ready
        case closed
    }

    public let id: UInt16
    private(set) var state: State = .opening
    private let declarations: [AMQPMethod]
    /// Unresolved messages by tag - `baseTag`; nil once resolved.
    private var pending: [(token: Token, messageID: String, returned: (UInt16, String)?)?] = []
    private var baseTag: UInt64 = 1
    private var nextTag: UInt64 = 1
    private var returning: (code: UInt16, text: String, bodyLeft: UInt64)?
    private var awaitingReturnHeader: (code: UInt16, text: String)?
    public private(set) var flowActive = true

    public init(id: UInt16, declarations: [AMQPMethod]) {
        self.id = id
        self.declarations = declarations
    }

    public var isReady: Bool { state == .ready }
    public var unresolved: Int { Int(nextTag - baseTag) }

    public mutating func open() -> [AMQPFrame] {
        [AMQPFrame(channel: id, .method(.channelOpen))]
    }

    /// Registers messages about to be published (in this order); returns the first's tag.
    public mutating func published(_ messages: [(Token, String)]) -> UInt64 {
        let first = nextTag
        for (token, messageID) in messages { pending.append((token, messageID, nil)) }
        nextTag += UInt64(messages.count)
        return first
    }

    public mutating func received(_ payload: AMQPFramePayload) -> Action {
        if state == .closed { return .none }
        switch payload {
        case .heartbeat:
            return .none
        case .header(_, let bodySize, let properties):
            guard let returned = awaitingReturnHeader else {
                return protocolViolation("a content header without basic.return")
            }
            awaitingReturnHeader = nil
            markReturned(messageID: properties.messageID, code: returned.code, text: returned.text)
            if bodySize > 0 { returning = (returned.code, returned.text, bodySize) }
            return .none
        case .body(let bytes):
            guard var r = returning else { return protocolViolation("a body frame without basic.return") }
            r.bodyLeft -= min(r.bodyLeft, UInt64(bytes.count))
            returning = r.bodyLeft == 0 ? nil : r
            return .none
        case .method(let method):
            return received(method)
        }
    }

    private mutating func received(_ method: AMQPMethod) -> Action {
        switch (state, method) {
        case (.opening, .channelOpenOk):
            state = .selecting
            return .send([AMQPFrame(channel: id, .method(.confirmSelect(noWait: false)))])
        case (.selecting, .confirmSelectOk):
            return nextDeclaration(remaining: declarations.count)
        case (.declaring(let remaining), .exchangeDeclareOk), (.declaring(let remaining), .queueDeclareOk):
            return nextDeclaration(remaining: remaining - 1)
        case (_, .channelClose(let code, let text, let classID, let methodID)):
            state = .closed
            return .closed(
                code: code, text: text, classID: classID, methodID: methodID,
                send: [AMQPFrame(channel: id, .method(.channelCloseOk))])
        case (_, .channelFlow(let active)):
            flowActive = active
            return .send([AMQPFrame(channel: id, .method(.channelFlowOk(active: active)))])
        case (.ready, .basicAck(let tag, let multiple)):
            return resolve(tag: tag, multiple: multiple, nack: false)
        case (.ready, .basicNack(let tag, let multiple, _)):
            return resolve(tag: tag, multiple: multiple, nack: true)
        case (.ready, .basicReturn(let code, let text, _, _)):
            awaitingReturnHeader = (code, text)
            return .none
        case (_, .channelCloseOk):
            state = .closed
            return .closed(code: 200, text: "closed", classID: 0, methodID: 0, send: [])
        default:
            return protocolViolation("unexpected \(method) on channel \(id)")
        }
    }

    /// sinkd closes the channel.
    public mutating func close() -> [AMQPFrame] {
        guard state != .closed else { return [] }
        state = .closed
        return [
            AMQPFrame(
                channel: id, .method(.channelClose(replyCode: 200, replyText: "sinkd closing", classID: 0, methodID: 0))
            )
        ]
    }

    /// The tokens still unresolved (to fail them when the channel or connection goes away).
    public mutating func drainUnresolved() -> [Token] {
        let tokens = pending.compactMap { $0?.token }
        pending.removeAll()
        baseTag = nextTag
        return tokens
    }

    private mutating func nextDeclaration(remaining: Int) -> Action {
        guard remaining > 0 else {
            state = .ready
            return .ready
        }
        state = .declaring(remaining: remaining)
        return .send([AMQPFrame(channel: id, .method(declarations[declarations.count - remaining]))])
    }

    private mutating func markReturned(messageID: String?, code: UInt16, text: String) {
        guard let messageID else { return }
        for i in pending.indices {
            if let entry = pending[i], entry.returned == nil, entry.messageID == messageID {
                pending[i]!.returned = (code, text)
                return
            }
        }
    }

    private mutating func resolve(tag: UInt64, multiple: Bool, nack: Bool) -> Action {
        guard tag >= baseTag, tag < nextTag else {
            // Already resolved (a multiple ack covering it came first) or never published.
            return tag == 0 && multiple ? resolveAll(nack: nack) : .none
        }
        var done: [(Token, Resolution)] = []
        let range = multiple ? (0...Int(tag - baseTag)) : (Int(tag - baseTag)...Int(tag - baseTag))
        for i in range {
            guard let entry = pending[i] else { continue }
            pending[i] = nil
            done.append((entry.token, Self.resolution(entry.returned, nack: nack)))
        }
        // Drop the resolved prefix.
        var drop = 0
        while drop < pending.count, pending[drop] == nil { drop += 1 }
        if drop > 0 {
            pending.removeFirst(drop)
            baseTag += UInt64(drop)
        }
        return done.isEmpty ? .none : .resolved(done)
    }

    /// ack/nack with tag 0 and multiple: every outstanding message.
    private mutating func resolveAll(nack: Bool) -> Action {
        let done = pending.compactMap { $0 }.map { ($0.token, Self.resolution($0.returned, nack: nack)) }
        pending.removeAll()
        baseTag = nextTag
        return done.isEmpty ? .none : .resolved(done)
    }

    static func resolution(_ returned: (UInt16, String)?, nack: Bool) -> Resolution {
        if nack { return .nacked }
        if let (code, text) = returned { return .returned(code: code, text: text) }
        return .acked
    }

    private mutating func protocolViolation(_ text: String) -> Action {
        state = .closed
        // 505 UNEXPECTED_FRAME; the connection handler closes the connection on this.
        return .closed(code: 505, text: text, classID: 0, methodID: 0, send: [])
    }
}
