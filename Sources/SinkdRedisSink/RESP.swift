import NIOCore

/// RESP2, the Redis protocol: values, their encoding, and an I/O-free incremental parser.
public enum RESPValue: Sendable, Equatable {
    case simpleString(String)
    case error(String)
    case integer(Int64)
    case bulkString([UInt8]?)
    case array([RESPValue]?)
}

/// How much one RESP value may hold. A client sizes these to the replies its commands can get, so
/// that a hostile or broken server cannot make it buffer more than a reply could need.
public struct RESPLimits: Sendable, Equatable {
    /// The longest type line (a simple string, an error, a header), without its CRLF.
    public var maxLineBytes: Int
    public var maxBulkBytes: Int
    /// 0: arrays are refused.
    public var maxArrayCount: Int

    public init(maxLineBytes: Int, maxBulkBytes: Int, maxArrayCount: Int) {
        self.maxLineBytes = maxLineBytes
        self.maxBulkBytes = maxBulkBytes
        self.maxArrayCount = maxArrayCount
    }

    /// What the protocol allows (bulk strings up to 512 MB).
    public static let protocolMaximum = RESPLimits(
        maxLineBytes: 64 << 10, maxBulkBytes: 512 << 20, maxArrayCount: 1 << 20)
    /// What XADD, AUTH and SELECT answer: an entry id, `+OK`, an error. Never an array, never long.
    public static let xaddReplies = RESPLimits(maxLineBytes: 4096, maxBulkBytes: 256, maxArrayCount: 0)
}

/// Where RESP is encoded: a byte array (tests, commands built once) or a ByteBuffer (the hot path
/// writes a batch's commands straight into the buffer the channel sends).
public protocol RESPOutput {
    mutating func appendRESP(byte: UInt8)
    mutating func appendRESP<C: Collection>(bytes: C) where C.Element == UInt8
}

extension Array: RESPOutput where Element == UInt8 {
    @inline(__always)
    public mutating func appendRESP(byte: UInt8) { append(byte) }
    @inline(__always)
    public mutating func appendRESP<C: Collection>(bytes: C) where C.Element == UInt8 { append(contentsOf: bytes) }
}

extension ByteBuffer: RESPOutput {
    @inline(__always)
    public mutating func appendRESP(byte: UInt8) { writeInteger(byte) }
    @inline(__always)
    public mutating func appendRESP<C: Collection>(bytes: C) where C.Element == UInt8 { writeBytes(bytes) }
}

public enum RESP {
    /// A command as an array of bulk strings.
    public static func encodeCommand<Out: RESPOutput>(_ parts: [[UInt8]], into out: inout Out) {
        appendHeader(UInt8(ascii: "*"), parts.count, into: &out)
        for p in parts { appendBulk(p, into: &out) }
    }

    /// `*N\r\n` or `$N\r\n`, without going through String.
    @inline(__always)
    public static func appendHeader<Out: RESPOutput>(_ type: UInt8, _ n: Int, into out: inout Out) {
        out.appendRESP(byte: type)
        appendDecimal(n, into: &out)
        out.appendRESP(byte: 0x0D)
        out.appendRESP(byte: 0x0A)
    }

    @inline(__always)
    public static func appendBulk<C: Collection, Out: RESPOutput>(_ bytes: C, into out: inout Out)
    where C.Element == UInt8 {
        appendHeader(UInt8(ascii: "$"), bytes.count, into: &out)
        out.appendRESP(bytes: bytes)
        out.appendRESP(byte: 0x0D)
        out.appendRESP(byte: 0x0A)
    }

    static func appendDecimal<Out: RESPOutput>(_ n: Int, into out: inout Out) {
        if n >= 10 { appendDecimal(n / 10, into: &out) }
        out.appendRESP(byte: UInt8(ascii: "0") + UInt8(n % 10))
    }

    public struct ProtocolError: Error, Equatable, CustomStringConvertible {
        public var description: String
    }

    /// Parses one value from the start of `bytes`: the value and how many bytes it took, nil if
    /// more bytes are needed. Throws on bytes that are not RESP or exceed `limits`.
    public static func parse(
        _ bytes: UnsafeRawBufferPointer, from start: Int = 0, depth: Int = 0,
        limits: RESPLimits = .protocolMaximum
    ) throws(ProtocolError) -> (RESPValue, Int)? {
        guard depth < 32 else { throw ProtocolError(description: "RESP arrays nested deeper than 32") }
        guard start < bytes.count else { return nil }
        guard let lineEnd = crlf(bytes, from: start + 1) else {
            if bytes.count - start > limits.maxLineBytes + 2 { throw lineTooLong(limits) }
            return nil
        }
        guard lineEnd - start - 1 <= limits.maxLineBytes else { throw lineTooLong(limits) }
        let line = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[(start + 1)..<lineEnd]), as: UTF8.self)
        let next = lineEnd + 2
        switch bytes[start] {
        case UInt8(ascii: "+"): return (.simpleString(line), next - start)
        case UInt8(ascii: "-"): return (.error(line), next - start)
        case UInt8(ascii: ":"):
            guard let n = Int64(line) else { throw ProtocolError(description: "bad RESP integer '\(line)'") }
            return (.integer(n), next - start)
        case UInt8(ascii: "$"):
            guard let n = Int(line), n >= -1 else { throw ProtocolError(description: "bad RESP bulk length '\(line)'") }
            guard n <= limits.maxBulkBytes else {
                throw ProtocolError(
                    description:
                        "a RESP bulk string of \(n) bytes, more than the \(limits.maxBulkBytes) this reply can hold")
            }
            if n == -1 { return (.bulkString(nil), next - start) }
            guard bytes.count >= next + n + 2 else { return nil }
            guard bytes[next + n] == 0x0D, bytes[next + n + 1] == 0x0A else {
                throw ProtocolError(description: "a RESP bulk string not followed by CRLF")
            }
            return (
                .bulkString(Array(UnsafeRawBufferPointer(rebasing: bytes[next..<(next + n)]))), next + n + 2 - start
            )
        case UInt8(ascii: "*"):
            guard limits.maxArrayCount > 0 else {
                throw ProtocolError(description: "an array reply, which this command never gets")
            }
            guard let n = Int(line), n >= -1, n <= limits.maxArrayCount else {
                throw ProtocolError(description: "bad RESP array length '\(line)'")
            }
            if n == -1 { return (.array(nil), next - start) }
            var items: [RESPValue] = []
            var offset = next
            for _ in 0..<n {
                guard let (item, used) = try parse(bytes, from: offset, depth: depth + 1, limits: limits) else {
                    return nil
                }
                items.append(item)
                offset += used
            }
            return (.array(items), offset - start)
        default:
            throw ProtocolError(description: "unexpected RESP type byte \(bytes[start])")
        }
    }

    static func lineTooLong(_ limits: RESPLimits) -> ProtocolError {
        ProtocolError(description: "a RESP line longer than \(limits.maxLineBytes) bytes")
    }

    /// Where the first CRLF at or after `from` starts, if any.
    static func crlf(_ bytes: UnsafeRawBufferPointer, from: Int) -> Int? {
        var i = from
        while i + 1 < bytes.count {
            if bytes[i] == 0x0D, bytes[i + 1] == 0x0A { return i }
            i += 1
        }
        return nil
    }
}
