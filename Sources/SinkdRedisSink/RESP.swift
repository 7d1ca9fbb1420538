/// RESP2, the Redis protocol: values, their encoding, and an I/O-free incremental parser.
public enum RESPValue: Sendable, Equatable {
    case simpleString(String)
    case error(String)
    case integer(Int64)
    case bulkString([UInt8]?)
    case array([RESPValue]?)
}

public enum RESP {
    /// A command as an array of bulk strings.
    public static func encodeCommand(_ parts: [[UInt8]], into out: inout [UInt8]) {
        appendHeader(UInt8(ascii: "*"), parts.count, into: &out)
        for p in parts { appendBulk(p, into: &out) }
    }

    /// `*N\r\n` or `$N\r\n`, without going through String.
    @inline(__always)
    public static func appendHeader(_ type: UInt8, _ n: Int, into out: inout [UInt8]) {
        out.append(type)
        appendDecimal(n, into: &out)
        out.append(0x0D)
        out.append(0x0A)
    }

    @inline(__always)
    public static func appendBulk<C: Collection>(_ bytes: C, into out: inout [UInt8]) where C.Element == UInt8 {
        appendHeader(UInt8(ascii: "$"), bytes.count, into: &out)
        out.append(contentsOf: bytes)
        out.append(0x0D)
        out.append(0x0A)
    }

    static func appendDecimal(_ n: Int, into out: inout [UInt8]) {
        if n >= 10 { appendDecimal(n / 10, into: &out) }
        out.append(UInt8(ascii: "0") + UInt8(n % 10))
    }

    public struct ProtocolError: Error, Equatable, CustomStringConvertible {
        public var description: String
    }

    /// Parses one value from the start of `bytes`: the value and how many bytes it took, nil if
    /// more bytes are needed. Throws on bytes that are not RESP.
    public static func parse(_ bytes: UnsafeRawBufferPointer, from start: Int = 0, depth: Int = 0) throws(ProtocolError) -> (RESPValue, Int)? {
        guard depth < 32 else { throw ProtocolError(description: "RESP arrays nested deeper than 32") }
        guard start < bytes.count else { return nil }
        guard let lineEnd = crlf(bytes, from: start + 1) else {
            if bytes.count - start > 64 << 10 { throw ProtocolError(description: "a RESP header line longer than 64 KiB") }
            return nil
        }
        let line = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[(start + 1)..<lineEnd]), as: UTF8.self)
        let next = lineEnd + 2
        switch bytes[start] {
        case UInt8(ascii: "+"): return (.simpleString(line), next - start)
        case UInt8(ascii: "-"): return (.error(line), next - start)
        case UInt8(ascii: ":"):
            guard let n = Int64(line) else { throw ProtocolError(description: "bad RESP integer '\(line)'") }
            return (.integer(n), next - start)
        case UInt8(ascii: "$"):
            guard let n = Int(line), n >= -1, n <= 512 << 20 else { throw ProtocolError(description: "bad RESP bulk length '\(line)'") }
            if n == -1 { return (.bulkString(nil), next - start) }
            guard bytes.count >= next + n + 2 else { return nil }
            guard bytes[next + n] == 0x0D, bytes[next + n + 1] == 0x0A else { throw ProtocolError(description: "a RESP bulk string not followed by CRLF") }
            return (.bulkString(Array(UnsafeRawBufferPointer(rebasing: bytes[next..<(next + n)]))), next + n + 2 - start)
        case UInt8(ascii: "*"):
            guard let n = Int(line), n >= -1, n <= 1 << 20 else { throw ProtocolError(description: "bad RESP array length '\(line)'") }
            if n == -1 { return (.array(nil), next - start) }
            var items: [RESPValue] = []
            var offset = next
            for _ in 0..<n {
                guard let (item, used) = try parse(bytes, from: offset, depth: depth + 1) else { return nil }
                items.append(item)
                offset += used
            }
            return (.array(items), offset - start)
        default:
            throw ProtocolError(description: "unexpected RESP type byte \(bytes[start])")
        }
    }

    private static func crlf(_ bytes: UnsafeRawBufferPointer, from: Int) -> Int? {
        var i = from
        while i + 1 < bytes.count {
            if bytes[i] == 0x0D, bytes[i + 1] == 0x0A { return i }
            i += 1
        }
        return nil
    }
}
