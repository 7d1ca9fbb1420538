#if canImport(Glibc)
import Glibc
#endif
import SinkdCore

/// Random-access bytes a scanner reads: a segment file, or memory in tests and fuzzing.
public protocol SegmentSource {
    var size: Int { get }
    /// Reads up to `buffer.count` bytes at `offset`; returns how many were read.
    func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// What a scanner finds, frame by frame, in file order.
public enum ScanEvent: Equatable {
    /// A valid frame. `bodyOffset` is where its body starts in the file.
    case record(seq: UInt64, frameOffset: Int, bodyOffset: Int, bodyLength: Int)
    /// Bytes between two valid frames that are not a valid frame (bit rot, a damaged length):
    /// skipped and reported, never fatal.
    case corrupt(offset: Int, length: Int)
    /// Bytes after the last valid frame that hold no valid frame: an interrupted write.
    case tornTail(offset: Int, length: Int)
    case end(offset: Int)
}

/// Reads the frames of one segment in order with a bounded buffer, verifying each checksum.
///
/// After a bad frame it searches forward byte by byte for the next frame whose length fits, whose
/// seq follows the last good one, and whose checksum matches; what lies between is `corrupt`.
/// Finding none, the rest of the file is a `tornTail`. So one damaged frame costs one record, never
/// the rest of the file.
///
/// Resynchronising is linear in the file's size: the window only moves forward while candidates
/// are tried (a candidate's body is checksummed from a scratch buffer, not loaded into the
/// window), and before the first good frame a candidate's seq must lie within 2^32 of `nearSeq`
/// (the segment's id), which random bytes pass once in 2^31 tries.
public struct SegmentScanner<Source: SegmentSource> {
    public let source: Source
    public private(set) var offset: Int
    private let maxBody: Int
    private var lastSeq: UInt64
    private let nearSeq: UInt64
    private var window: [UInt8] = []
    private var windowStart = 0
    private var scratch: [UInt8] = []
    /// Bytes read from the source so far: what a resynchronisation cost.
    public private(set) var bytesRead = 0

    public init(
        source: Source, from offset: Int = SegmentFormat.headerSize, maxBody: Int, afterSeq: UInt64 = 0,
        nearSeq: UInt64 = 0
    ) {
        self.source = source
        self.offset = offset
        self.maxBody = maxBody
        self.lastSeq = afterSeq
        self.nearSeq = nearSeq
    }

    /// The body bytes of the frame `next()` just returned (valid until the next call).
    public func withBody<T>(bodyOffset: Int, length: Int, _ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        let start = bodyOffset - windowStart
        return try window.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[start..<(start + length)])) }
    }

    public mutating func next() throws -> ScanEvent {
        let size = source.size
        if offset >= size { return .end(offset: offset) }
        if let frame = try validFrame(at: offset, searching: false) {
            offset = frame.bodyOffset + frame.bodyLength
            lastSeq = frame.seq
            return .record(
                seq: frame.seq, frameOffset: frame.bodyOffset - SegmentFormat.frameHeaderSize,
                bodyOffset: frame.bodyOffset, bodyLength: frame.bodyLength)
        }
        let bad = offset
        var candidate = offset + 1
        while candidate + SegmentFormat.frameHeaderSize <= size {
            if try validFrame(at: candidate, searching: true) != nil {
                offset = candidate
                return .corrupt(offset: bad, length: candidate - bad)
            }
            candidate += 1
        }
        offset = size
        return .tornTail(offset: bad, length: size - bad)
    }

    private mutating func validFrame(
        at position: Int, searching: Bool
    ) throws -> (seq: UInt64, bodyOffset: Int, bodyLength: Int)? {
        let size = source.size
        guard position + SegmentFormat.frameHeaderSize <= size else { return nil }
        try ensure(position, SegmentFormat.frameHeaderSize)
        let h = position - windowStart
        let (length, stored, seq) = window.withUnsafeBytes { w in
            (
                Int(UInt32(littleEndian: w.loadUnaligned(fromByteOffset: h, as: UInt32.self))),
                UInt32(littleEndian: w.loadUnaligned(fromByteOffset: h + 4, as: UInt32.self)),
                UInt64(littleEndian: w.loadUnaligned(fromByteOffset: h + 8, as: UInt64.self))
            )
        }
        let bodyOffset = position + SegmentFormat.frameHeaderSize
        guard length > 0, length <= maxBody, bodyOffset + length <= size else { return nil }
        guard seq > lastSeq else { return nil }
        if lastSeq == 0 {
            if nearSeq > 0, (seq > nearSeq ? seq - nearSeq : nearSeq - seq) > UInt64(UInt32.max) { return nil }
        } else if seq - lastSeq > UInt64(UInt32.max) {
            return nil
        }
        let inWindow = bodyOffset >= windowStart && bodyOffset + length <= windowStart + window.count
        if searching && !inWindow {
            // Checksum the candidate without moving the window back and forth.
            guard try streamedChecksum(bodyOffset, length, seq: seq) == stored else { return nil }
            try ensure(bodyOffset, length)
            return (seq, bodyOffset, length)
        }
        try ensure(bodyOffset, length)
        let computed = window.withUnsafeBytes { w -> UInt32 in
            var crc = CRC32C()
            crc.update(
                UnsafeRawBufferPointer(rebasing: w[(bodyOffset - windowStart)..<(bodyOffset - windowStart + length)]))
            return SegmentFormat.frameChecksum(bodyCRC: crc, seq: seq)
        }
        return computed == stored ? (seq, bodyOffset, length) : nil
    }

    private mutating func streamedChecksum(_ start: Int, _ length: Int, seq: UInt64) throws -> UInt32 {
        if scratch.isEmpty { scratch = [UInt8](repeating: 0, count: 256 * 1024) }
        var crc = CRC32C()
        var done = 0
        let source = self.source
        while done < length {
            let chunk = min(scratch.count, length - done)
            let n = try scratch.withUnsafeMutableBytes {
                try source.read(at: start + done, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<chunk]))
            }
            bytesRead += n
            guard n == chunk else { throw ScanError.shortRead(offset: start + done, wanted: chunk, got: n) }
            scratch.withUnsafeBytes { crc.update(UnsafeRawBufferPointer(rebasing: $0[0..<chunk])) }
            done += chunk
        }
        return SegmentFormat.frameChecksum(bodyCRC: crc, seq: seq)
    }

    /// Makes bytes [position, position + count) available in `window`.
    private mutating func ensure(_ position: Int, _ count: Int) throws {
        if position >= windowStart, position + count <= windowStart + window.count { return }
        let want = max(count, 256 * 1024)
        let available = min(want, source.size - position)
        var buffer = window
        window = []
        if buffer.count != available { buffer = [UInt8](repeating: 0, count: available) }
        let source = self.source
        let read = try buffer.withUnsafeMutableBytes { try source.read(at: position, into: $0) }
        bytesRead += read
        if read < available { buffer.removeLast(available - read) }
        window = buffer
        windowStart = position
        guard read >= count else { throw ScanError.shortRead(offset: position, wanted: count, got: read) }
    }
}

public enum ScanError: Error, Equatable {
    case shortRead(offset: Int, wanted: Int, got: Int)
}

/// Bytes in memory, for tests and the fuzzer.
public struct MemorySegment: SegmentSource {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public var size: Int { bytes.count }
    public func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = min(buffer.count, bytes.count - offset)
        guard n > 0 else { return 0 }
        bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + n)])) }
        return n
    }
}

/// A segment file read with pread. `size` is fixed at open (a reader never looks past what it was
/// told is durable).
public struct FileSegment: SegmentSource {
    public let fd: CInt
    public let size: Int

    public init(fd: CInt, size: Int) {
        self.fd = fd
        self.size = size
    }

    public func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError(operation: "pread", path: "fd \(fd)", errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }
}
