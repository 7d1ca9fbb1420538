// AMQP frames to bytes (AMQPFrame.swift has the model).

/// Appends AMQP's wire types.
struct AMQPWriter {
    var bytes: [UInt8]

    init(_ bytes: [UInt8] = []) { self.bytes = bytes }

    mutating func octet(_ v: UInt8) { bytes.append(v) }
    mutating func short(_ v: UInt16) { bytes.append(UInt8(v >> 8)); bytes.append(UInt8(v & 0xFF)) }
    mutating func long(_ v: UInt32) {
        for s in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8((v >> UInt32(s)) & 0xFF)) }
    }
    mutating func longlong(_ v: UInt64) {
        for s in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8((v >> UInt64(s)) & 0xFF)) }
    }

    /// A short string: at most 255 bytes (callers check; longer values are refused earlier).
    mutating func shortString(_ s: String) {
        let utf8 = s.utf8.prefix(255)
        bytes.append(UInt8(utf8.count))
        bytes.append(contentsOf: utf8)
    }

    mutating func longString(_ s: [UInt8]) {
        long(UInt32(s.count))
        bytes.append(contentsOf: s)
    }

    mutating func table(_ t: AMQPTable) {
        var inner = AMQPWriter()
        for (name, value) in t.entries {
            inner.shortString(name)
            inner.fieldValue(value)
        }
        longString(inner.bytes)
    }

    mutating func fieldValue(_ v: AMQPFieldValue) {
        switch v {
        case .bool(let b): octet(UInt8(ascii: "t")); octet(b ? 1 : 0)
        case .int8(let i): octet(UInt8(ascii: "b")); octet(UInt8(bitPattern: i))
        case .uint8(let i): octet(UInt8(ascii: "B")); octet(i)
        case .int16(let i): octet(UInt8(ascii: "s")); short(UInt16(bitPattern: i))
        case .uint16(let i): octet(UInt8(ascii: "u")); short(i)
        case .int32(let i): octet(UInt8(ascii: "I")); long(UInt32(bitPattern: i))
        case .uint32(let i): octet(UInt8(ascii: "i")); long(i)
        case .int64(let i): octet(UInt8(ascii: "l")); longlong(UInt64(bitPattern: i))
        case .float(let f): octet(UInt8(ascii: "f")); long(f.bitPattern)
        case .double(let d): octet(UInt8(ascii: "d")); longlong(d.bitPattern)
        case .decimal(let scale, let value): octet(UInt8(ascii: "D")); octet(scale); long(value)
        case .longString(let s): octet(UInt8(ascii: "S")); longString(s)
        case .bytes(let s): octet(UInt8(ascii: "x")); longString(s)
        case .timestamp(let t): octet(UInt8(ascii: "T")); longlong(t)
        case .table(let t): octet(UInt8(ascii: "F")); table(t)
        case .void: octet(UInt8(ascii: "V"))
        case .array(let values):
            octet(UInt8(ascii: "A"))
            var inner = AMQPWriter()
            for value in values { inner.fieldValue(value) }
            longString(inner.bytes)
        }
    }

    mutating func properties(_ p: AMQPProperties) {
        var flags: UInt16 = 0
        var body = AMQPWriter()
        if let v = p.contentType { flags |= 1 << 15; body.shortString(v) }
        if let v = p.contentEncoding { flags |= 1 << 14; body.shortString(v) }
        if let v = p.headers { flags |= 1 << 13; body.table(v) }
        if let v = p.deliveryMode { flags |= 1 << 12; body.octet(v) }
        if let v = p.priority { flags |= 1 << 11; body.octet(v) }
        if let v = p.correlationID { flags |= 1 << 10; body.shortString(v) }
        if let v = p.replyTo { flags |= 1 << 9; body.shortString(v) }
        if let v = p.expiration { flags |= 1 << 8; body.shortString(v) }
        if let v = p.messageID { flags |= 1 << 7; body.shortString(v) }
        if let v = p.timestamp { flags |= 1 << 6; body.longlong(v) }
        if let v = p.type { flags |= 1 << 5; body.shortString(v) }
        if let v = p.userID { flags |= 1 << 4; body.shortString(v) }
        if let v = p.appID { flags |= 1 << 3; body.shortString(v) }
        short(flags)
        bytes.append(contentsOf: body.bytes)
    }

    mutating func method(_ m: AMQPMethod) {
        let (classID, methodID) = m.ids
        short(classID)
        short(methodID)
        switch m {
        case .connectionStart(let major, let minor, let properties, let mechanisms, let locales):
            octet(major); octet(minor); table(properties); longString(Array(mechanisms.utf8));
            longString(Array(locales.utf8))
        case .connectionStartOk(let properties, let mechanism, let response, let locale):
            table(properties); shortString(mechanism); longString(response); shortString(locale)
        case .connectionTune(let channelMax, let frameMax, let heartbeat),
            .connectionTuneOk(let channelMax, let frameMax, let heartbeat):
            short(channelMax); long(frameMax); short(heartbeat)
        case .connectionOpen(let vhost):
            shortString(vhost); shortString(""); octet(0)
        case .connectionOpenOk:
            shortString("")
        case .connectionClose(let code, let text, let c, let mid), .channelClose(let code, let text, let c, let mid):
            short(code); shortString(text); short(c); short(mid)
        case .connectionCloseOk, .connectionUnblocked, .channelCloseOk, .exchangeDeclareOk, .confirmSelectOk:
            break
        case .connectionBlocked(let reason):
            shortString(reason)
        case .channelOpen:
            shortString("")
        case .channelOpenOk:
            longString([])
        case .channelFlow(let active), .channelFlowOk(let active):
            octet(active ? 1 : 0)
        case .exchangeDeclare(
            let exchange, let type, let passive, let durable, let autoDelete, let isInternal, let noWait, let arguments):
            short(0); shortString(exchange); shortString(type)
            octet(
                (passive ? 1 : 0) | (durable ? 2 : 0) | (autoDelete ? 4 : 0) | (isInternal ? 8 : 0) | (noWait ? 16 : 0))
            table(arguments)
        case .queueDeclare(
            let queue, let passive, let durable, let exclusive, let autoDelete, let noWait, let arguments):
            short(0); shortString(queue)
            octet(
                (passive ? 1 : 0) | (durable ? 2 : 0) | (exclusive ? 4 : 0) | (autoDelete ? 8 : 0) | (noWait ? 16 : 0))
            table(arguments)
        case .queueDeclareOk(let queue, let messages, let consumers):
            shortString(queue); long(messages); long(consumers)
        case .basicPublish(let exchange, let routingKey, let mandatory, let immediate):
            short(0); shortString(exchange); shortString(routingKey); octet((mandatory ? 1 : 0) | (immediate ? 2 : 0))
        case .basicReturn(let code, let text, let exchange, let routingKey):
            short(code); shortString(text); shortString(exchange); shortString(routingKey)
        case .basicAck(let tag, let multiple):
            longlong(tag); octet(multiple ? 1 : 0)
        case .basicNack(let tag, let multiple, let requeue):
            longlong(tag); octet((multiple ? 1 : 0) | (requeue ? 2 : 0))
        case .confirmSelect(let noWait):
            octet(noWait ? 1 : 0)
        }
    }
}

public enum AMQPFrameEncoder {
    /// Appends one frame.
    public static func append(_ frame: AMQPFrame, to out: inout [UInt8]) {
        var payload = AMQPWriter()
        let type: AMQPFrameType
        switch frame.payload {
        case .method(let m):
            type = .method
            payload.method(m)
        case .header(let classID, let bodySize, let properties):
            type = .header
            payload.short(classID)
            payload.short(0)
            payload.longlong(bodySize)
            payload.properties(properties)
        case .body(let bytes):
            type = .body
            payload.bytes = bytes
        case .heartbeat:
            type = .heartbeat
        }
        appendFrame(type: type, channel: frame.channel, payload: payload.bytes, to: &out)
    }

    static func appendFrame(
        type: AMQPFrameType, channel: UInt16, payload: some Collection<UInt8>, to out: inout [UInt8]
    ) {
        var w = AMQPWriter(out)
        out = []
        w.octet(type.rawValue)
        w.short(channel)
        w.long(UInt32(payload.count))
        w.bytes.append(contentsOf: payload)
        w.octet(AMQPFrame.frameEnd)
        out = w.bytes
    }

    /// One message: basic.publish, its content header and body frames of at most
    /// `frameMax` bytes each (an empty body has no body frame).
    public static func appendPublish(
        channel: UInt16, exchange: String, routingKey: String, mandatory: Bool,
        properties: AMQPProperties, body: [UInt8], frameMax: Int, to out: inout [UInt8]
    ) {
        append(
            AMQPFrame(
                channel: channel,
                .method(
                    .basicPublish(exchange: exchange, routingKey: routingKey, mandatory: mandatory, immediate: false))),
            to: &out)
        append(
            AMQPFrame(channel: channel, .header(classID: 60, bodySize: UInt64(body.count), properties: properties)),
            to: &out)
        let chunk = max(1, frameMax - AMQPFrame.overhead)
        var start = 0
        while start < body.count {
            let end = min(body.count, start + chunk)
            appendFrame(type: .body, channel: channel, payload: body[start..<end], to: &out)
            start = end
        }
    }
}
