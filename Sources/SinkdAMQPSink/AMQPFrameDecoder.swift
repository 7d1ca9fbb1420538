// AMQP frames from bytes (AMQPFrame.swift has the model and the invariants).

/// Reads AMQP's wire types from a byte buffer, throwing on truncation inside a frame.
struct AMQPReader {
    let bytes: UnsafeRawBufferPointer
    var offset: Int

    init(_ bytes: UnsafeRawBufferPointer, offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    private mutating func need(_ n: Int) throws(AMQPProtocolError) {
        guard n >= 0, offset + n <= bytes.count else {
            throw AMQPProtocolError("a frame ends in the middle of a field")
        }
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
            throw AMQPProtocolError(
                "unknown field type '\(String(UnicodeScalar(type)))' (0x\(String(type, radix: 16)))")
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
        guard bytes[7 + size] == AMQPFrame.frameEnd else {
            throw AMQPProtocolError("a frame without its end octet 0xCE")
        }
        guard let type = AMQPFrameType(rawValue: typeByte) else {
            throw AMQPProtocolError("unknown frame type \(typeByte)")
        }
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
            return .connectionStart(
                versionMajor: try r.octet(), versionMinor: try r.octet(), serverProperties: try r.table(),
                mechanisms: String(decoding: try r.longString(), as: UTF8.self),
                locales: String(decoding: try r.longString(), as: UTF8.self))
        case (10, 11):
            return .connectionStartOk(
                clientProperties: try r.table(), mechanism: try r.shortString(), response: try r.longString(),
                locale: try r.shortString())
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
            return .connectionClose(
                replyCode: try r.short(), replyText: try r.shortString(), classID: try r.short(),
                methodID: try r.short())
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
            return .channelClose(
                replyCode: try r.short(), replyText: try r.shortString(), classID: try r.short(),
                methodID: try r.short())
        case (20, 41):
            return .channelCloseOk
        case (40, 10):
            _ = try r.short()
            let exchange = try r.shortString()
            let type = try r.shortString()
            let bits = try r.octet()
            return .exchangeDeclare(
                exchange: exchange, type: type, passive: bits & 1 != 0, durable: bits & 2 != 0,
                autoDelete: bits & 4 != 0,
                internal: bits & 8 != 0, noWait: bits & 16 != 0, arguments: try r.table())
        case (40, 11):
            return .exchangeDeclareOk
        case (50, 10):
            _ = try r.short()
            let queue = try r.shortString()
            let bits = try r.octet()
            return .queueDeclare(
                queue: queue, passive: bits & 1 != 0, durable: bits & 2 != 0, exclusive: bits & 4 != 0,
                autoDelete: bits & 8 != 0,
                noWait: bits & 16 != 0, arguments: try r.table())
        case (50, 11):
            return .queueDeclareOk(queue: try r.shortString(), messageCount: try r.long(), consumerCount: try r.long())
        case (60, 40):
            _ = try r.short()
            let exchange = try r.shortString()
            let routingKey = try r.shortString()
            let bits = try r.octet()
            return .basicPublish(
                exchange: exchange, routingKey: routingKey, mandatory: bits & 1 != 0, immediate: bits & 2 != 0)
        case (60, 50):
            return .basicReturn(
                replyCode: try r.short(), replyText: try r.shortString(), exchange: try r.shortString(),
                routingKey: try r.shortString())
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
