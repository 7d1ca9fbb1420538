import SinkdCore

/// Kafka's wire primitives (big-endian integers, zigzag varints) and the v2 record batch (magic 2),
/// I/O-free: what a Produce request carries. Layout from Kafka's protocol guide ("Record Batch"):
/// baseOffset int64, batchLength int32, partitionLeaderEpoch int32, magic int8, crc uint32
/// (CRC-32C of everything after it), attributes int16, lastOffsetDelta int32, baseTimestamp int64,
/// maxTimestamp int64, producerId int64, producerEpoch int16, baseSequence int32, then the records
/// (count int32; each: length varint, attributes int8, timestampDelta varlong, offsetDelta varint,
/// key and value as varint length + bytes (-1 = null), headers count varint, each header key and
/// value as varint length + bytes).
public struct KafkaWriter: Sendable {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    /// A writer that will not grow (copy itself) before `capacity` bytes.
    public init(capacity: Int) { bytes.reserveCapacity(capacity) }

    public mutating func int8(_ v: Int8) { bytes.append(UInt8(bitPattern: v)) }
    public mutating func int16(_ v: Int16) { append(UInt16(bitPattern: v)) }
    public mutating func int32(_ v: Int32) { append(UInt32(bitPattern: v)) }
    public mutating func uint32(_ v: UInt32) { append(v) }
    public mutating func int64(_ v: Int64) { append(UInt64(bitPattern: v)) }
    public mutating func raw(_ v: some Collection<UInt8>) { bytes.append(contentsOf: v) }

    private mutating func append<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) }
    }

    /// Zigzag, then unsigned LEB128 (Kafka's varint and varlong).
    public mutating func varint(_ v: Int64) {
        var u = UInt64(bitPattern: (v << 1) ^ (v >> 63))
        while u >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: u) | 0x80)
            u >>= 7
        }
        bytes.append(UInt8(u))
    }

    /// The bytes `varint(v)` writes.
    public static func varintSize(_ v: Int64) -> Int {
        let u = UInt64(bitPattern: (v << 1) ^ (v >> 63))
        return max(1, (64 - u.leadingZeroBitCount + 6) / 7)
    }

    /// The bytes `varbytes(v)` writes.
    public static func varbytesSize(_ v: [UInt8]?) -> Int {
        guard let v else { return 1 }
        return varintSize(Int64(v.count)) + v.count
    }

    /// A varint length then the string's UTF-8 bytes.
    public mutating func varbytes(utf8 s: String) {
        varint(Int64(s.utf8.count))
        raw(s.utf8)
    }

    /// Unsigned LEB128 (compact lengths and counts in flexible versions).
    public mutating func uvarint(_ v: UInt64) {
        var u = v
        while u >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: u) | 0x80)
            u >>= 7
        }
        bytes.append(UInt8(u))
    }

    /// A varint length then the bytes; nil is length -1.
    public mutating func varbytes(_ v: [UInt8]?) {
        guard let v else { return varint(-1) }
        varint(Int64(v.count))
        raw(v)
    }

    mutating func overwrite(int32 v: Int32, at offset: Int) {
        withUnsafeBytes(of: UInt32(bitPattern: v).bigEndian) { for (i, b) in $0.enumerated() { bytes[offset + i] = b } }
    }

    mutating func overwrite(int16 v: Int16, at offset: Int) {
        withUnsafeBytes(of: UInt16(bitPattern: v).bigEndian) { for (i, b) in $0.enumerated() { bytes[offset + i] = b } }
    }

    mutating func overwrite(uint32 v: UInt32, at offset: Int) {
        withUnsafeBytes(of: v.bigEndian) { for (i, b) in $0.enumerated() { bytes[offset + i] = b } }
    }
}

public struct KafkaRecord: Sendable, Equatable {
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [(key: String, value: [UInt8]?)]
    public var timestampMillis: Int64

    public init(key: [UInt8]?, value: [UInt8]?, headers: [(key: String, value: [UInt8]?)] = [], timestampMillis: Int64)
    {
        self.key = key
        self.value = value
        self.headers = headers
        self.timestampMillis = timestampMillis
    }

    public static func == (a: KafkaRecord, b: KafkaRecord) -> Bool {
        a.key == b.key && a.value == b.value && a.timestampMillis == b.timestampMillis
            && a.headers.map(\.key) == b.headers.map(\.key) && a.headers.map(\.value) == b.headers.map(\.value)
    }
}

public enum KafkaRecordBatch {
    /// The idempotent producer's identity for a batch: the broker drops a batch whose sequence it
    /// has already written for this producer id and epoch (a retry), instead of storing it twice.
    public struct Producer: Sendable, Equatable {
        public var id: Int64
        public var epoch: Int16
        public var baseSequence: Int32
        public init(id: Int64, epoch: Int16, baseSequence: Int32) {
            self.id = id
            self.epoch = epoch
            self.baseSequence = baseSequence
        }
        /// No idempotence: producer id -1.
        public static let none = Producer(id: -1, epoch: -1, baseSequence: -1)
    }

    /// A batch's bytes besides its records: base offset and length (the log overhead, which
    /// max.message.bytes counts too) and the v2 header.
    public static let overheadBytes = 61

    /// At most the bytes `record` takes in an uncompressed batch (its varints at their longest).
    public static func estimatedSize(_ record: KafkaRecord) -> Int {
        var size = 5 + 1 + 10 + 5 + 5 + (record.key?.count ?? 0) + 5 + (record.value?.count ?? 0) + 5
        for h in record.headers { size += 5 + h.key.utf8.count + 5 + (h.value?.count ?? 0) }
        return size
    }

    /// `indices` (one partition's records, in WAL order) cut into runs whose batch fits `limit`
    /// bytes by the estimate; a record that alone exceeds it gets a batch of its own (the broker
    /// decides: compression may make it fit, else MESSAGE_TOO_LARGE).
    public static func chunks(_ indices: [Int], limit: Int, record: (Int) -> KafkaRecord) -> [[Int]] {
        chunks(indices, limit: limit, size: { estimatedSize(record($0)) })
    }

    /// The same, with each record's estimate given directly.
    public static func chunks(_ indices: [Int], limit: Int, size estimate: (Int) -> Int) -> [[Int]] {
        var out: [[Int]] = []
        var current: [Int] = []
        var bytes = overheadBytes
        for i in indices {
            let size = estimate(i)
            if !current.isEmpty, bytes + size > limit {
                out.append(current)
                current = []
                bytes = overheadBytes
            }
            current.append(i)
            bytes += size
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    /// The batch attributes' codec (bits 0-2). Only the records after the count are compressed.
    public enum Compression: String, Sendable, Equatable, CaseIterable {
        case none
        case gzip
        var attribute: Int16 { self == .gzip ? 1 : 0 }
    }

    /// One v2 batch of `records` (at least one), timestamps CreateTime.
    public static func encode(_ records: [KafkaRecord], producer: Producer, compression: Compression = .none) -> [UInt8]
    {
        var w = KafkaWriter(capacity: overheadBytes + records.reduce(0) { $0 + estimatedSize($1) })
        encode(records, producer: producer, compression: compression, into: &w)
        return w.bytes
    }

    /// The same batch appended to `w` (a Produce request being written): each value is copied
    /// once, into `w`, and no record is first written anywhere else (uncompressed).
    public static func encode(
        _ records: [KafkaRecord], producer: Producer, compression: Compression = .none, into w: inout KafkaWriter
    ) {
        let base = records.map(\.timestampMillis).min() ?? 0
        let max = records.map(\.timestampMillis).max() ?? 0
        w.int64(0)  // baseOffset: the broker assigns offsets
        let lengthAt = w.bytes.count
        w.int32(0)  // batchLength, filled in below
        w.int32(-1)  // partitionLeaderEpoch
        w.int8(2)  // magic
        let crcAt = w.bytes.count
        w.uint32(0)  // crc, filled in below
        let attributesAt = w.bytes.count
        w.int16(Compression.none.attribute)  // attributes: the codec (set below), CreateTime, not transactional, not control
        w.int32(Int32(truncatingIfNeeded: Swift.max(records.count - 1, 0)))  // lastOffsetDelta
        w.int64(base)
        w.int64(max)
        w.int64(producer.id)
        w.int16(producer.epoch)
        w.int32(producer.baseSequence)
        w.int32(Int32(truncatingIfNeeded: records.count))
        if compression == .gzip {
            var section = KafkaWriter(capacity: records.reduce(0) { $0 + estimatedSize($1) })
            appendRecords(records, base: base, to: &section)
            if let compressed = Gzip.compress(section.bytes) {
                w.overwrite(int16: Compression.gzip.attribute, at: attributesAt)
                w.raw(compressed)
            } else {
                w.raw(section.bytes)
            }
        } else {
            appendRecords(records, base: base, to: &w)
        }
        w.overwrite(int32: Int32(truncatingIfNeeded: w.bytes.count - lengthAt - 4), at: lengthAt)
        let crc = CRC32C.checksum(w.bytes[(crcAt + 4)...])
        w.overwrite(uint32: crc, at: crcAt)
    }

    /// The records section: each record's length first, computed, so its fields go straight to `w`.
    private static func appendRecords(_ records: [KafkaRecord], base: Int64, to w: inout KafkaWriter) {
        for (i, r) in records.enumerated() {
            let delta = r.timestampMillis - base
            var length =
                1 + KafkaWriter.varintSize(delta) + KafkaWriter.varintSize(Int64(i))
                + KafkaWriter.varbytesSize(r.key) + KafkaWriter.varbytesSize(r.value)
                + KafkaWriter.varintSize(Int64(r.headers.count))
            for h in r.headers {
                length +=
                    KafkaWriter.varintSize(Int64(h.key.utf8.count)) + h.key.utf8.count
                    + KafkaWriter.varbytesSize(h.value)
            }
            w.varint(Int64(length))
            w.int8(0)
            w.varint(delta)
            w.varint(Int64(i))
            w.varbytes(r.key)
            w.varbytes(r.value)
            w.varint(Int64(r.headers.count))
            for h in r.headers {
                w.varbytes(utf8: h.key)
                w.varbytes(h.value)
            }
        }
    }
}
