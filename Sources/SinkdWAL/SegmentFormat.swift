import SinkdCore

/// Constants and header layouts of segment files. WriteAheadLog.swift states the format in prose.
public enum SegmentFormat {
    public static let magic: [UInt8] = Array("SINKDWAL".utf8)
    public static let version: UInt32 = 1
    /// magic (8) + version (4) + reserved (4).
    public static let headerSize = 16
    /// body length u32 + crc32c u32 + seq u64.
    public static let frameHeaderSize = 16

    public static func header() -> [UInt8] {
        var h = magic
        h.appendLE(version)
        h.appendLE(UInt32(0))
        return h
    }

    /// "00000000000000000042.wal": the segment's id is the first seq it was created for.
    public static func fileName(id: UInt64) -> String {
        let digits = String(id)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".wal"
    }

    public static func summaryFileName(id: UInt64) -> String {
        String(fileName(id: id).dropLast(4)) + ".idx"
    }

    /// The id of a segment or summary file name, or nil for any other file.
    public static func id(fromFileName name: String, suffix: String) -> UInt64? {
        guard name.hasSuffix(suffix), name.count == 20 + suffix.count else { return nil }
        return UInt64(name.dropLast(suffix.count))
    }

    /// The checksum stored in a frame: CRC-32C of the body followed by the 8 little-endian seq bytes.
    /// (Body first, so the body's part can be computed before the seq is assigned.)
    public static func frameChecksum(bodyCRC: CRC32C, seq: UInt64) -> UInt32 {
        var crc = bodyCRC
        withUnsafeBytes(of: seq.littleEndian) { crc.update($0) }
        return crc.value
    }

    /// Appends a whole frame for `body` to `out`.
    public static func appendFrame(seq: UInt64, body: [UInt8], bodyCRC: CRC32C, to out: inout [UInt8]) {
        body.withUnsafeBytes { appendFrame(seq: seq, body: $0, bodyCRC: bodyCRC, to: &out) }
    }

    public static func appendFrame(seq: UInt64, body: UnsafeRawBufferPointer, bodyCRC: CRC32C, to out: inout [UInt8]) {
        out.appendLE(UInt32(body.count))
        out.appendLE(frameChecksum(bodyCRC: bodyCRC, seq: seq))
        out.appendLE(seq)
        out.append(contentsOf: body)
    }
}
