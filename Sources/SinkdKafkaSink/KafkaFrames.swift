/// Reading Kafka's wire format, bounds-checked: a broker's answer can say anything, and no answer
/// may trap. I/O-free.
public struct KafkaReader: Sendable {
    public struct Truncated: Error, Sendable, Equatable {
        public var what: String
        public var offset: Int
    }

    let bytes: [UInt8]
    public private(set) var offset = 0
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var remaining: Int { bytes.count - offset }

    mutating func take(_ n: Int, _ what: String) throws(Truncated) -> ArraySlice<UInt8> {
        guard n >= 0, n <= remaining else { throw Truncated(what: what, offset: offset) }
        defer { offset += n }
        return bytes[offset..<(offset + n)]
    }

    private mutating func integer<T: FixedWidthInteger>(_: T.Type, _ what: String) throws(Truncated) -> T {
        let raw = try take(MemoryLayout<T>.size, what)
        return raw.reduce(T.zero) { ($0 << 8) | T(truncatingIfNeeded: $1) }
    }

    public mutating func int8(_ what: String) throws(Truncated) -> Int8 {
        Int8(bitPattern: try integer(UInt8.self, what))
    }
    public mutating func int16(_ what: String) throws(Truncated) -> Int16 {
        Int16(bitPattern: try integer(UInt16.self, what))
    }
    public mutating func int32(_ what: String) throws(Truncated) -> Int32 {
        Int32(bitPattern: try integer(UInt32.self, what))
    }
    public mutating func int64(_ what: String) throws(Truncated) -> Int64 {
        Int64(bitPattern: try integer(UInt64.self, what))
    }

    /// Unsigned LEB128 (compact lengths, tagged-field counts), at most 10 bytes.
    public mutating func uvarint(_ what: String) throws(Truncated) -> UInt64 {
        var value: UInt64 = 0
        for shift in stride(from: 0, to: 70, by: 7) {
            let b = try take(1, what).first!
            value |= UInt64(b & 0x7F) << UInt64(shift)
            if b & 0x80 == 0 { return value }
        }
        throw Truncated(what: what + " (varint longer than 10 bytes)", offset: offset)
    }

    /// int16 length then UTF-8; -1 = null.
    public mutating func nullableString(_ what: String) throws(Truncated) -> String? {
        let n = Int(try int16(what))
        if n < 0 { return nil }
        return String(decoding: try take(n, what), as: UTF8.self)
    }

    /// Flexible versions: uvarint length + 1 (0 = null).
    public mutating func compactNullableString(_ what: String) throws(Truncated) -> String? {
        let n = try uvarint(what)
        if n == 0 { return nil }
        guard n - 1 <= UInt64(remaining) else { throw Truncated(what: what, offset: offset) }
        return String(decoding: try take(Int(n - 1), what), as: UTF8.self)
    }

    /// Flexible versions' tagged fields: skipped (none is needed here).
    public mutating func skipTaggedFields(_ what: String) throws(Truncated) {
        let count = try uvarint(what)
        guard count <= UInt64(remaining) else { throw Truncated(what: what, offset: offset) }
        for _ in 0..<count {
            _ = try uvarint(what)
            let size = try uvarint(what)
            guard size <= UInt64(remaining) else { throw Truncated(what: what, offset: offset) }
            _ = try take(Int(size), what)
        }
    }
}

/// Kafka frames: a 4-byte big-endian size, then that many bytes. Feed bytes as they arrive, in
/// pieces of any size; take whole frames out. A size above `maxFrameBytes` or below zero is an
/// error (the connection is then unusable: close it). I/O-free.
public struct KafkaFrameDecoder: Sendable {
    public struct Oversized: Error, Sendable, Equatable {
        public var size: Int32
    }

    public let maxFrameBytes: Int
    private var buffer: [UInt8] = []
    private var start = 0

    public init(maxFrameBytes: Int = 64 << 20) { self.maxFrameBytes = maxFrameBytes }

    public mutating func feed(_ bytes: some Collection<UInt8>) { buffer.append(contentsOf: bytes) }

    /// The next whole frame's payload, or nil until one has arrived.
    public mutating func next() throws(Oversized) -> [UInt8]? {
        guard buffer.count - start >= 4 else { return nil }
        let size = Int32(bitPattern: buffer[start..<(start + 4)].reduce(UInt32(0)) { ($0 << 8) | UInt32($1) })
        guard size >= 0, Int(size) <= maxFrameBytes else { throw Oversized(size: size) }
        guard buffer.count - start - 4 >= Int(size) else { return nil }
        let frame = Array(buffer[(start + 4)..<(start + 4 + Int(size))])
        start += 4 + Int(size)
        if start > 1 << 16, start * 2 > buffer.count {
            buffer.removeFirst(start)
            start = 0
        }
        return frame
    }
}

/// ApiVersions (api key 18), v0: the first request on every connection, to learn which versions of
/// each API the broker speaks. (v0 has no body and every broker answers it.)
public enum KafkaApiVersions {
    public static let apiKey: Int16 = 18

    public struct Range: Sendable, Equatable {
        public var min: Int16
        public var max: Int16
    }

    /// A whole request frame (size prefix included), request header v1.
    public static func request(correlationID: Int32, clientID: String) -> [UInt8] {
        var body = KafkaWriter()
        body.int16(apiKey)
        body.int16(0)
        body.int32(correlationID)
        let id = Array(clientID.utf8.prefix(Int(Int16.max)))
        body.int16(Int16(id.count))
        body.raw(id)
        var frame = KafkaWriter()
        frame.int32(Int32(body.bytes.count))
        frame.raw(body.bytes)
        return frame.bytes
    }

    public struct Response: Sendable, Equatable {
        public var correlationID: Int32
        public var errorCode: Int16
        public var versions: [Int16: Range]
    }

    /// A v0 response frame's payload (response header v0, then the body).
    public static func response(_ payload: [UInt8]) throws(KafkaReader.Truncated) -> Response {
        var r = KafkaReader(payload)
        let correlation = try r.int32("correlation id")
        let error = try r.int16("error code")
        let count = try r.int32("api keys count")
        guard count >= 0, Int(count) * 6 <= r.remaining else {
            throw KafkaReader.Truncated(what: "api keys (\(count))", offset: r.offset)
        }
        var versions: [Int16: Range] = [:]
        for _ in 0..<count {
            let key = try r.int16("api key")
            versions[key] = Range(min: try r.int16("min version"), max: try r.int16("max version"))
        }
        return Response(correlationID: correlation, errorCode: error, versions: versions)
    }
}
