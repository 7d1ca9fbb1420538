/// How the Java client's default partitioner places a keyed record, so that sinkd puts Conductor's
/// records (key = the message id, Conductor's taskId) in the partitions Conductor's own producer
/// would: `toPositive(murmur2(keyBytes)) % numPartitions` (Kafka's `Utils.murmur2` and
/// `BuiltInPartitioner.partitionForKey`). I/O-free.
public enum KafkaPartitioner {
    /// Kafka's murmur2 (seed 0x9747b28c), over the bytes as the Java client hashes them.
    public static func murmur2(_ data: some Collection<UInt8>) -> Int32 {
        let bytes = Array(data)
        let length = bytes.count
        let seed: UInt32 = 0x9747_b28c
        let m: UInt32 = 0x5bd1_e995
        let r: UInt32 = 24
        var h: UInt32 = seed ^ UInt32(truncatingIfNeeded: length)
        let blocks = length / 4
        for i in 0..<blocks {
            let o = i * 4
            var k =
                UInt32(bytes[o]) | UInt32(bytes[o + 1]) << 8 | UInt32(bytes[o + 2]) << 16 | UInt32(bytes[o + 3]) << 24
            k = k &* m
            k ^= k >> r
            k = k &* m
            h = h &* m
            h ^= k
        }
        let tail = blocks * 4
        switch length % 4 {
        case 3:
            h ^= UInt32(bytes[tail + 2]) << 16
            h ^= UInt32(bytes[tail + 1]) << 8
            h ^= UInt32(bytes[tail])
            h = h &* m
        case 2:
            h ^= UInt32(bytes[tail + 1]) << 8
            h ^= UInt32(bytes[tail])
            h = h &* m
        case 1:
            h ^= UInt32(bytes[tail])
            h = h &* m
        default:
            break
        }
        h ^= h >> 13
        h = h &* m
        h ^= h >> 15
        return Int32(bitPattern: h)
    }

    /// Kafka's `Utils.toPositive`: the sign bit cleared (not the absolute value).
    public static func toPositive(_ n: Int32) -> Int32 { n & 0x7fff_ffff }

    /// The partition of a record with this key among `partitions`; nil when there are none (a
    /// broker's metadata can say anything: never a trap).
    public static func partition(forKey key: some Collection<UInt8>, partitions: Int32) -> Int32? {
        guard partitions > 0 else { return nil }
        return toPositive(murmur2(key)) % partitions
    }
}
