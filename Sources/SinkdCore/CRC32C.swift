import CCRC32C

/// CRC-32C (Castagnoli), the checksum of every WAL frame and of Kafka's record batches.
///
/// Why CRC-32C: it detects every burst error up to 32 bits and all odd numbers of bit errors, it is
/// what ext4, iSCSI, RocksDB and Vector's disk buffer use for the same job, and CPUs accelerate it.
/// It guards against torn writes and media bit rot, not against an adversary; nothing here needs a
/// cryptographic hash. The CPU's `crc32` instruction
/// where there is one (CCRC32C), else software slicing-by-8 (about 1-2 GB/s on one core here).
public struct CRC32C: Sendable {
    public private(set) var state: UInt32 = 0xFFFF_FFFF

    public init() {}

    public var value: UInt32 { state ^ 0xFFFF_FFFF }

    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc = CRC32C()
        crc.update(bytes)
        return crc.value
    }

    public static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var crc = CRC32C()
        crc.update(bytes)
        return crc.value
    }

    public mutating func update<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        if let done: Void = bytes.withContiguousStorageIfAvailable({ update(UnsafeRawBufferPointer($0)) }) {
            return done
        }
        Array(bytes).withUnsafeBytes { update($0) }
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0, let base = bytes.baseAddress else { return }
        if CRC32C.hardware {
            state = sinkd_crc32c_hw_update(state, base, bytes.count)
            return
        }
        updateSoftware(bytes)
    }

    /// Whether the CPU's CRC-32C instruction is used (x86-64 with SSE4.2).
    public static let hardware = sinkd_crc32c_hw_available() == 1

    /// The table-driven implementation, used where the CPU has no CRC-32C instruction (and by the
    /// tests, which check that both agree).
    public mutating func updateSoftware(_ bytes: UnsafeRawBufferPointer) {
        var crc = state
        var count = bytes.count
        guard count > 0, let base = bytes.baseAddress else { return }
        var p = base
        CRC32C.table.withUnsafeBufferPointer { t in
            while count >= 8 {
                let word = UInt64(littleEndian: p.loadUnaligned(as: UInt64.self)) ^ UInt64(crc)
                crc =
                    t[7 &* 256 &+ Int(word & 0xFF)]
                    ^ t[6 &* 256 &+ Int((word >> 8) & 0xFF)]
                    ^ t[5 &* 256 &+ Int((word >> 16) & 0xFF)]
                    ^ t[4 &* 256 &+ Int((word >> 24) & 0xFF)]
                    ^ t[3 &* 256 &+ Int((word >> 32) & 0xFF)]
                    ^ t[2 &* 256 &+ Int((word >> 40) & 0xFF)]
                    ^ t[1 &* 256 &+ Int((word >> 48) & 0xFF)]
                    ^ t[Int(word >> 56)]
                p += 8
                count &-= 8
            }
            while count > 0 {
                crc = t[Int((crc ^ UInt32(p.load(as: UInt8.self))) & 0xFF)] ^ (crc >> 8)
                p += 1
                count &-= 1
            }
        }
        state = crc
    }

    /// Eight 256-entry tables: table k maps a byte to its CRC contribution k bytes further on.
    private static let table: [UInt32] = {
        let polynomial: UInt32 = 0x82F6_3B78  // Castagnoli, reflected
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ polynomial : c >> 1 }
            t[i] = c
        }
        for k in 1..<8 {
            for i in 0..<256 {
                let previous = t[(k - 1) * 256 + i]
                t[k * 256 + i] = t[Int(previous & 0xFF)] ^ (previous >> 8)
            }
        }
        return t
    }()
}
