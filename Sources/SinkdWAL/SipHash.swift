/// SipHash-2-4 with 128-bit output (Aumasson & Bernstein), keyed with a fixed key so that the
/// dedupe keys written into segment summaries mean the same after a restart.
/// Used for (sink, id) dedupe keys: at a million keys the chance of any collision is about 1e-27.
public struct DedupeKey: Hashable, Sendable {
    public var a: UInt64
    public var b: UInt64

    public init(a: UInt64, b: UInt64) {
        self.a = a
        self.b = b
    }

    /// The key of (sink, id): SipHash-128 over the sink's length (u64 little-endian), the sink
    /// bytes, the id bytes. The length prefix makes the encoding unambiguous: sinks and ids may
    /// both contain any byte, NUL included, so no separator could.
    public init(sink: UnsafeRawBufferPointer, id: UnsafeRawBufferPointer) {
        var h = SipHash128()
        var length = UInt64(sink.count).littleEndian
        for _ in 0..<8 {
            h.update(byte: UInt8(truncatingIfNeeded: length))
            length >>= 8
        }
        h.update(sink)
        h.update(id)
        (a, b) = h.finalize()
    }

    public init(sink: String, id: String) {
        var sink = sink
        var id = id
        self = sink.withUTF8 { s in
            id.withUTF8 { i in DedupeKey(sink: UnsafeRawBufferPointer(s), id: UnsafeRawBufferPointer(i)) }
        }
    }
}

struct SipHash128 {
    private var v0: UInt64 = 0x736f_6d65_7073_6575
    private var v1: UInt64 = 0x646f_7261_6e64_6f6d
    private var v2: UInt64 = 0x6c79_6765_6e65_7261
    private var v3: UInt64 = 0x7465_6462_7974_6573
    private var tail: UInt64 = 0
    private var tailCount = 0
    private var length = 0

    /// The default key spells "sinkd dedupe v1!": fixed, so keys are stable across processes by design.
    init(k0: UInt64 = 0x6564_2064_6b6e_6973, k1: UInt64 = 0x2131_7620_6570_7564) {
        v0 ^= k0
        v1 ^= k1
        v2 ^= k0
        v3 ^= k1
        v1 ^= 0xEE
    }

    @inline(__always) private static func rotl(_ x: UInt64, _ b: UInt64) -> UInt64 { (x << b) | (x >> (64 - b)) }

    @inline(__always) private mutating func round() {
        v0 = v0 &+ v1; v1 = Self.rotl(v1, 13); v1 ^= v0; v0 = Self.rotl(v0, 32)
        v2 = v2 &+ v3; v3 = Self.rotl(v3, 16); v3 ^= v2
        v0 = v0 &+ v3; v3 = Self.rotl(v3, 21); v3 ^= v0
        v2 = v2 &+ v1; v1 = Self.rotl(v1, 17); v1 ^= v2; v2 = Self.rotl(v2, 32)
    }

    @inline(__always) private mutating func compress(_ m: UInt64) {
        v3 ^= m
        round()
        round()
        v0 ^= m
    }

    mutating func update(byte: UInt8) {
        tail |= UInt64(byte) << (8 * UInt64(tailCount))
        tailCount += 1
        length += 1
        if tailCount == 8 {
            compress(tail)
            tail = 0
            tailCount = 0
        }
    }

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        var i = 0
        while tailCount != 0, i < bytes.count {
            update(byte: bytes[i])
            i += 1
        }
        // Whole words while the tail is empty (every key hashes a sink and an id per record).
        while i + 8 <= bytes.count {
            compress(UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)))
            length += 8
            i += 8
        }
        while i < bytes.count {
            update(byte: bytes[i])
            i += 1
        }
    }

    mutating func finalize() -> (UInt64, UInt64) {
        let b = tail | (UInt64(truncatingIfNeeded: length) << 56)
        compress(b)
        v2 ^= 0xEE
        round(); round(); round(); round()
        let first = v0 ^ v1 ^ v2 ^ v3
        v1 ^= 0xDD
        round(); round(); round(); round()
        let second = v0 ^ v1 ^ v2 ^ v3
        return (first, second)
    }
}
