/// AMQP 0-9-1 frames (https://www.rabbitmq.com/resources/specs/amqp0-9-1.pdf, section 4.2):
/// decoded from bytes and encoded to bytes, no I/O. Only what a publisher needs.
///
///     frame  = type:octet channel:short size:long payload:size*octet 0xCE
///     method = class-id:short method-id:short arguments
///     header = class-id:short weight:short body-size:longlong property-flags:short properties
///
/// Invariants:
/// - The decoder consumes whole frames only; given part of one it asks for more bytes and
///   consumes nothing, so a read may split a frame anywhere.
/// - A frame larger than the negotiated frame_max (or, before tuning, 128 KiB), a missing 0xCE
///   end octet or a malformed argument is a protocol error: the connection is closed, never grown.

public enum AMQPFrameType: UInt8, Sendable {
    case method = 1, header = 2, body = 3, heartbeat = 8
}

public struct AMQPProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A field-table value (RabbitMQ's type letters).
public indirect enum AMQPFieldValue: Sendable, Equatable {
    case bool(Bool)
    case int8(Int8)
    case uint8(UInt8)
    case int16(Int16)
    case uint16(UInt16)
    case int32(Int32)
    case uint32(UInt32)
    case int64(Int64)
    case float(Float)
    case double(Double)
    case decimal(scale: UInt8, value: UInt32)
    case longString([UInt8])
    case array([AMQPFieldValue])
    case timestamp(UInt64)
    case table(AMQPTable)
    case void
    case bytes([UInt8])

    public static func string(_ s: String) -> AMQPFieldValue { .longString(Array(s.utf8)) }
}

/// A field table, in order (encoding keeps the order given).
public struct AMQPTable: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    public var entries: [(String, AMQPFieldValue)]

    public init(_ entries: [(String, AMQPFieldValue)] = []) { self.entries = entries }
    public init(dictionaryLiteral elements: (String, AMQPFieldValue)...) { entries = elements }

    public subscript(key: String) -> AMQPFieldValue? { entries.first { $0.0 == key }?.1 }

    public static func == (a: AMQPTable, b: AMQPTable) -> Bool {
        a.entries.count == b.entries.count && zip(a.entries, b.entries).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    }
}

/// The basic content properties sinkd sets (and reads back from a basic.return).
public struct AMQPProperties: Sendable, Equatable {
    public var contentType: String?
    public var contentEncoding: String?
    public var headers: AMQPTable?
    public var deliveryMode: UInt8?
    public var priority: UInt8?
    public var correlationID: String?
    public var replyTo: String?
    public var expiration: String?
    public var messageID: String?
    public var timestamp: UInt64?
    public var type: String?
    public var userID: String?
    public var appID: String?

    public init() {}
}

/// A method, by class and method: those a publisher sends or receives.
public enum AMQPMethod: Sendable, Equatable {
    // connection (10)
    case connectionStart(versionMajor: UInt8, versionMinor: UInt8, serverProperties: AMQPTable, mechanisms: String, locales: String)
    case connectionStartOk(clientProperties: AMQPTable, mechanism: String, response: [UInt8], locale: String)
    case connectionTune(channelMax: UInt16, frameMax: UInt32, heartbeat: UInt16)
    case connectionTuneOk(channelMax: UInt16, frameMax: UInt32, heartbeat: UInt16)
    case connectionOpen(virtualHost: String)
    case connectionOpenOk
    case connectionClose(replyCode: UInt16, replyText: String, classID: UInt16, methodID: UInt16)
    case connectionCloseOk
    case connectionBlocked(reason: String)
    case connectionUnblocked
    // channel (20)
    case channelOpen
    case channelOpenOk
    case channelFlow(active: Bool)
    case channelFlowOk(active: Bool)
    case channelClose(replyCode: UInt16, replyText: String, classID: UInt16, methodID: UInt16)
    case channelCloseOk
    // exchange (40)
    case exchangeDeclare(exchange: String, type: String, passive: Bool, durable: Bool, autoDelete: Bool, internal: Bool, noWait: Bool, arguments: AMQPTable)
    case exchangeDeclareOk
    // queue (50)
    case queueDeclare(queue: String, passive: Bool, durable: Bool, exclusive: Bool, autoDelete: Bool, noWait: Bool, arguments: AMQPTable)
    case queueDeclareOk(queue: String, messageCount: UInt32, consumerCount: UInt32)
    // basic (60)
    case basicPublish(exchange: String, routingKey: String, mandatory: Bool, immediate: Bool)
    case basicReturn(replyCode: UInt16, replyText: String, exchange: String, routingKey: String)
    case basicAck(deliveryTag: UInt64, multiple: Bool)
    case basicNack(deliveryTag: UInt64, multiple: Bool, requeue: Bool)
    // confirm (85)
    case confirmSelect(noWait: Bool)
    case confirmSelectOk

    /// (class-id, method-id) for error messages and close frames.
    public var ids: (UInt16, UInt16) {
        switch self {
        case .connectionStart: (10, 10)
        case .connectionStartOk: (10, 11)
        case .connectionTune: (10, 30)
        case .connectionTuneOk: (10, 31)
        case .connectionOpen: (10, 40)
        case .connectionOpenOk: (10, 41)
        case .connectionClose: (10, 50)
        case .connectionCloseOk: (10, 51)
        case .connectionBlocked: (10, 60)
        case .connectionUnblocked: (10, 61)
        case .channelOpen: (20, 10)
        case .channelOpenOk: (20, 11)
        case .channelFlow: (20, 20)
        case .channelFlowOk: (20, 21)
        case .channelClose: (20, 40)
        case .channelCloseOk: (20, 41)
        case .exchangeDeclare: (40, 10)
        case .exchangeDeclareOk: (40, 11)
        case .queueDeclare: (50, 10)
        case .queueDeclareOk: (50, 11)
        case .basicPublish: (60, 40)
        case .basicReturn: (60, 50)
        case .basicAck: (60, 80)
        case .basicNack: (60, 120)
        case .confirmSelect: (85, 10)
        case .confirmSelectOk: (85, 11)
        }
    }
}

public enum AMQPFramePayload: Sendable, Equatable {
    case method(AMQPMethod)
    case header(classID: UInt16, bodySize: UInt64, properties: AMQPProperties)
    case body([UInt8])
    case heartbeat
}

public struct AMQPFrame: Sendable, Equatable {
    public var channel: UInt16
    public var payload: AMQPFramePayload

    public init(channel: UInt16, _ payload: AMQPFramePayload) {
        self.channel = channel
        self.payload = payload
    }

    public static let protocolHeader: [UInt8] = [65, 77, 81, 80, 0, 0, 9, 1]  // "AMQP" 0 0 9 1
    public static let frameEnd: UInt8 = 0xCE
    /// Bytes a frame adds around its payload (type, channel, size, end).
    public static let overhead = 8
}

// MARK: Decoding

/// Reads AMQP's wire types from a byte buffer, throwing on truncation inside a frame.
struct AMQPReader {
    let bytes: UnsafeRawBufferPointer
    var offset: Int

    init(_ bytes: UnsafeRawBufferPointer, offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    private mutating func need(_ n: Int) throws(AMQPProtocolError) {
        guard n >= 0, offset + n <= bytes.count else { throw AMQPProtocolError("a frame ends in the middle of a field") }
    }

    mutating func octet() throws(AMQPProtocolError) -> UInt8 {
        try need(1)
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func short() throws(AMQPProtocolError) -> UInt16 {
        try need(2)
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    mutating func long() throws(AMQPProtocolError) -> UInt32 {
        try need(4)
        defer { offset += 4 }
        var v: UInt32 = 0
        for i in 0..<4 { v = v << 8 | UInt32(bytes[offset + i]) }
        return v
    }

    mutating func longlong() throws(AMQPProtocolError) -> UInt64 {
        try need(8)
        defer { offset += 8 }
        var v: UInt64 = 0
        for i in 0..<8 { v = v << 8 | UInt64(bytes[offset + i]) }
        return v
    }

    mutating func raw(_ n: Int) throws(AMQPProtocolError) -> [UInt8] {
        try need(n)
        defer { offset += n }
        return Array(bytes[offset..<(offset + n)])
    }

    mutating func shortString() throws(AMQPProtocolError) -> String {
        let n = Int(try octet())
        return String(decoding: try raw(n), as: UTF8.self)
    }

    mutating func longString() throws(AMQPProtocolError) -> [UInt8] {
        let n = Int(try long())
        return try raw(n)
    }

    mutating func table() throws(AMQPProtocolError) -> AMQPTable {
        let size = Int(try long())
        try need(size)
        let end = offset + size
        var entries: [(String, AMQPFieldValue)] = []
        while offset < end {
            let name = try shortString()
            entries.append((name, try fieldValue()))
        }
        guard offset == end else { throw AMQPProtocolError("a field table overruns its size") }
        return AMQPTable(entries)
    }

    mutating func fieldValue() throws(AMQPProtocolError) -> AMQPFieldValue {
        let type = try octet()
        switch type {
        case UInt8(ascii: "t"): return .bool(try octet() != 0)
        case UInt8(ascii: "b"): return .int8(Int8(bitPattern: try octet()))
        case UInt8(ascii: "B"): return .uint8(try octet())
        case UInt8(ascii: "s"): return .int16(Int16(bitPattern: try short()))
        case UInt8(ascii: "u"): return .uint16(try short())
        case UInt8(ascii: "I"): return .int32(Int32(bitPattern: try long()))
        case UInt8(ascii: "i"): return .uint32(try long())
        case UInt8(ascii: "l"): return .int64(Int64(bitPattern: try longlong()))
        case UInt8(ascii: "f"): return .float(Float(bitPattern: try long()))
        case UInt8(ascii: "d"): return .double(Double(bitPattern: try longlong()))
        case UInt8(ascii: "D"): return .decimal(scale: try octet(), value: try long())
        case UInt8(ascii: "S"): return .longString(try longString())
        case UInt8(ascii: "x"): return .bytes(try longString())
        case UInt8(ascii: "T"): return .timestamp(try longlong())
        case UInt8(ascii: "F"): return .table(try table())
        case UInt8(ascii: "V"): return .void
        case UInt8(ascii: "A"):
            let size = Int(try long())
            try need(size)
            let end = offset + size
            var values: [AMQPFieldValue] = []
            while offset < end { values.append(try fieldValue()) }
            guard offset == end else { throw AMQPProtocolError("a field array overruns its size") }
            return .array(values)
        default:
            throw AMQPProtocolError("unknown field type '\(String(UnicodeScalar(type)))' (0x\(String(type, radix: 16)))")
        }
    }
}

public struct AMQPFrameDecoder: Sendable {
    /// The largest frame accepted (the negotiated frame_max once tuned).
    public var maxFrameSize: Int

    public init(maxFrameSize: Int = 131_072) {
        self.maxFrameSize = maxFrameSize
    }

    /// Decodes one frame at the start of `bytes`: the frame and the bytes it took, or nil when
    /// `bytes` holds only part of one.
    public func decode(_ bytes: UnsafeRawBufferPointer) throws(AMQPProtocolError) -> (AMQPFrame, Int)? {
        guard bytes.count >= 7 else { return nil }
        if bytes[0] == UInt8(ascii: "A") {
            // The server answers an unsupported protocol header with its own and closes.
            throw AMQPProtocolError("the server does not speak AMQP 0-9-1 (it answered with a protocol header)")
        }
        var header = AMQPReader(bytes)
        let typeByte = try header.octet()
        let channel = try header.short()
        let size = Int(try header.long())
        guard size + AMQPFrame.overhead <= maxFrameSize else {
            throw AMQPProtocolError("a frame of \(size + AMQPFrame.overhead) bytes, above frame_max \(maxFrameSize)")
        }
        guard bytes.count >= 7 + size + 1 else { return nil }
        guard bytes[7 + size] == AMQPFrame.frameEnd else { throw AMQPProtocolError("a frame without its end octet 0xCE") }
        guard let type = AMQPFrameType(rawValue: typeByte) else { throw AMQPProtocolError("unknown frame type \(typeByte)") }
        let payloadBytes = UnsafeRawBufferPointer(rebasing: bytes[7..<(7 + size)])
        var r = AMQPReader(payloadBytes)
        let payload: AMQPFramePayload
        switch type {
        case .heartbeat:
            payload = .heartbeat
        case .body:
            payload = .body(Array(payloadBytes))
        case .header:
            let classID = try r.short()
            _ = try r.short()  // weight
            let bodySize = try r.longlong()
            payload = .header(classID: classID, bodySize: bodySize, properties: try Self.properties(&r))
        case .method:
            payload = .method(try Self.method(&r))
        }
        if case .method = payload, r.offset != size {
            throw AMQPProtocolError("a method frame with \(size - r.offset) bytes left over")
        }
        return (AMQPFrame(channel: channel, payload), 7 + size + 1)
    }

    static func properties(_ r: inout AMQPReader) throws(AMQPProtocolError) -> AMQPProperties {
        let flags = try r.short()
        // A set bit 0 means another flags word follows (never with basic's 14 properties).
        var more = flags & 1 == 1
        while more { more = try r.short() & 1 == 1 }
        var p = AMQPProperties()
        func bit(_ n: UInt16) -> Bool { flags & (1 << n) != 0 }
        if bit(15) { p.contentType = try r.shortString() }
        if bit(14) { p.contentEncoding = try r.shortString() }
        if bit(13) { p.headers = try r.table() }
        if bit(12) { p.deliveryMode = try r.octet() }
        if bit(11) { p.priority = try r.octet() }
        if bit(10) { p.correlationID = try r.shortString() }
        if bit(9) { p.replyTo = try r.shortString() }
        if bit(8) { p.expiration = try r.shortString() }
        if bit(7) { p.messageID = try r.shortString() }
        if bit(6) { p.timestamp = try r.longlong() }
        if bit(5) { p.type = try r.shortString() }
        if bit(4) { p.userID = try r.shortString() }
        if bit(3) { p.appID = try r.shortString() }
        if bit(2) { _ = try r.shortString() }  // cluster-id (deprecated)
        return p
    }

    static func method(_ r: inout AMQPReader) throws(AMQPProtocolError) -> AMQPMethod {
        let classID = try r.short()
        let methodID = try r.short()
        switch (classID, methodID) {
        case (10, 10):
            return .connectionStart(versionMajor: try r.octet(), versionMinor: try r.octet(), serverProperties: try r.table(),
                                    mechanisms: String(decoding: try r.longString(), as: UTF8.self), locales: String(decoding: try r.longString(), as: UTF8.self))
        case (10, 11):
            return .connectionStartOk(clientProperties: try r.table(), mechanism: try r.shortString(), response: try r.longString(), locale: try r.shortString())
        case (10, 30):
            return .connectionTune(channelMax: try r.short(), frameMax: try r.long(), heartbeat: try r.short())
        case (10, 31):
            return .connectionTuneOk(channelMax: try r.short(), frameMax: try r.long(), heartbeat: try r.short())
        case (10, 40):
            let vhost = try r.shortString()
            _ = try r.shortString()
            _ = try r.octet()
            return .connectionOpen(virtualHost: vhost)
        case (10, 41):
            _ = try r.shortString()
            return .connectionOpenOk
        case (10, 50):
            return .connectionClose(replyCode: try r.short(), replyText: try r.shortString(), classID: try r.short(), methodID: try r.short())
        case (10, 51):
            return .connectionCloseOk
        case (10, 60):
            return .connectionBlocked(reason: try r.shortString())
        case (10, 61):
            return .connectionUnblocked
        case (20, 10):
            _ = try r.shortString()
            return .channelOpen
        case (20, 11):
            _ = try r.longString()
            return .channelOpenOk
        case (20, 20):
            return .channelFlow(active: try r.octet() & 1 == 1)
        case (20, 21):
            return .channelFlowOk(active: try r.octet() & 1 == 1)
        case (20, 40):
            return .channelClose(replyCode: try r.short(), replyText: try r.shortString(), classID: try r.short(), methodID: try r.short())
        case (20, 41):
            return .channelCloseOk
        case (40, 10):
            _ = try r.short()
            let exchange = try r.shortString()
            let type = try r.shortString()
            let bits = try r.octet()
            return .exchangeDeclare(exchange: exchange, type: type, passive: bits & 1 != 0, durable: bits & 2 != 0, autoDelete: bits & 4 != 0,
                                    internal: bits & 8 != 0, noWait: bits & 16 != 0, arguments: try r.table())
        case (40, 11):
            return .exchangeDeclareOk
        case (50, 10):
            _ = try r.short()
            let queue = try r.shortString()
            let bits = try r.octet()
            return .queueDeclare(queue: queue, passive: bits & 1 != 0, durable: bits & 2 != 0, exclusive: bits & 4 != 0, autoDelete: bits & 8 != 0,
                                 noWait: bits & 16 != 0, arguments: try r.table())
        case (50, 11):
            return .queueDeclareOk(queue: try r.shortString(), messageCount: try r.long(), consumerCount: try r.long())
        case (60, 40):
            _ = try r.short()
            let exchange = try r.shortString()
            let routingKey = try r.shortString()
            let bits = try r.octet()
            return .basicPublish(exchange: exchange, routingKey: routingKey, mandatory: bits & 1 != 0, immediate: bits & 2 != 0)
        case (60, 50):
            return .basicReturn(replyCode: try r.short(), replyText: try r.shortString(), exchange: try r.shortString(), routingKey: try r.shortString())
        case (60, 80):
            return .basicAck(deliveryTag: try r.longlong(), multiple: try r.octet() & 1 != 0)
        case (60, 120):
            let tag = try r.longlong()
            let bits = try r.octet()
            return .basicNack(deliveryTag: tag, multiple: bits & 1 != 0, requeue: bits & 2 != 0)
        case (85, 10):
            return .confirmSelect(noWait: try r.octet() & 1 != 0)
        case (85, 11):
            return .confirmSelectOk
        default:
            throw AMQPProtocolError("unexpected method \(classID).\(methodID)")
        }
    }
}

// MARK: Encoding

/// Appends AMQP's wire types.
struct AMQPWriter {
    var bytes: [UInt8]

    init(_ bytes: [UInt8] = []) { self.bytes = bytes }

    mutating func octet(_ v: UInt8) { bytes.append(v) }
    mutating func short(_ v: UInt16) { bytes.append(UInt8(v >> 8)); bytes.append(UInt8(v & 0xFF)) }
    mutating func long(_ v: UInt32) { for s in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8((v >> UInt32(s)) & 0xFF)) } }
    mutating func longlong(_ v: UInt64) { for s in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8((v >> UInt64(s)) & 0xFF)) } }

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
            octet(major); octet(minor); table(properties); longString(Array(mechanisms.utf8)); longString(Array(locales.utf8))
        case .connectionStartOk(let properties, let mechanism, let response, let locale):
            table(properties); shortString(mechanism); longString(response); shortString(locale)
        case .connectionTune(let channelMax, let frameMax, let heartbeat), .connectionTuneOk(let channelMax, let frameMax, let heartbeat):
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
        case .exchangeDeclare(let exchange, let type, let passive, let durable, let autoDelete, let isInternal, let noWait, let arguments):
            short(0); shortString(exchange); shortString(type)
            octet((passive ? 1 : 0) | (durable ? 2 : 0) | (autoDelete ? 4 : 0) | (isInternal ? 8 : 0) | (noWait ? 16 : 0))
            table(arguments)
        case .queueDeclare(let queue, let passive, let durable, let exclusive, let autoDelete, let noWait, let arguments):
            short(0); shortString(queue)
            octet((passive ? 1 : 0) | (durable ? 2 : 0) | (exclusive ? 4 : 0) | (autoDelete ? 8 : 0) | (noWait ? 16 : 0))
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

    static func appendFrame(type: AMQPFrameType, channel: UInt16, payload: some Collection<UInt8>, to out: inout [UInt8]) {
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
    public static func appendPublish(channel: UInt16, exchange: String, routingKey: String, mandatory: Bool,
                                     properties: AMQPProperties, body: [UInt8], frameMax: Int, to out: inout [UInt8]) {
        append(AMQPFrame(channel: channel, .method(.basicPublish(exchange: exchange, routingKey: routingKey, mandatory: mandatory, immediate: false))), to: &out)
        append(AMQPFrame(channel: channel, .header(classID: 60, bodySize: UInt64(body.count), properties: properties)), to: &out)
        let chunk = max(1, frameMax - AMQPFrame.overhead)
        var start = 0
        while start < body.count {
            let end = min(body.count, start + chunk)
            appendFrame(type: .body, channel: channel, payload: body[start..<end], to: &out)
            start = end
        }
    }
}
