import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// What the line framer hands on: a whole line, or the news that a line exceeded the limit.
public enum IngestFrame: Sendable, Equatable {
    case line(ByteBuffer)
    /// A line longer than the limit was dropped; framing resumes after its newline.
    case tooLarge(bytes: Int)
}

/// Splits a byte stream at `\n` (a `\r` before it is dropped) and never keeps more than
/// `maxLineBytes` of one line: a longer line is reported too_large and skipped to its newline.
/// I/O-free: the caller owns the buffer and takes one frame at a time, so it can stop between
/// any two lines (the ingest connection does, when it owes a client too many answers).
public struct LineSplitter: Sendable {
    public let maxLineBytes: Int
    private var discarding = false
    private var discarded = 0
    private var searchedUpTo = 0

    public init(maxLineBytes: Int) {
        self.maxLineBytes = maxLineBytes
    }

    /// The next frame of `buffer`, its bytes consumed; nil when no whole line is left (a partial
    /// line stays in `buffer`, unless it is already too long, when its bytes are dropped).
    public mutating func next(_ buffer: inout ByteBuffer) -> IngestFrame? {
        let readableCount = buffer.readableBytes
        // memchr: the line scan is the hottest loop of ingest (a byte-at-a-time search through the
        // buffer's collection view cost 6 % of sinkd's CPU under load).
        let from = searchedUpTo
        let found: Int? = buffer.withUnsafeReadableBytes { raw -> Int? in
            guard from < raw.count, let base = raw.baseAddress, let hit = memchr(base + from, 0x0A, raw.count - from)
            else { return nil }
            return base.distance(to: UnsafeRawPointer(hit))
        }
        if let length = found {
            searchedUpTo = 0
            if discarding {
                buffer.moveReaderIndex(forwardBy: length + 1)
                let total = discarded + length
                discarding = false
                discarded = 0
                return .tooLarge(bytes: total)
            }
            var lineLength = length
            if lineLength > 0,
                buffer.getInteger(at: buffer.readerIndex + lineLength - 1, as: UInt8.self) == UInt8(ascii: "\r")
            {
                lineLength -= 1
            }
            if lineLength > maxLineBytes {
                buffer.moveReaderIndex(forwardBy: length + 1)
                return .tooLarge(bytes: lineLength)
            }
            let line = buffer.readSlice(length: lineLength)!
            buffer.moveReaderIndex(forwardBy: length - lineLength + 1)
            return .line(line)
        }
        // No newline yet.
        if discarding || readableCount > maxLineBytes + 1 {
            discarding = true
            discarded += readableCount
            buffer.moveReaderIndex(forwardBy: readableCount)
            searchedUpTo = 0
            return nil
        }
        searchedUpTo = readableCount
        return nil
    }
}

/// `LineSplitter` as a NIO decoder, for the control socket (whose clients are few and trusted
/// enough to decode a whole burst). A partial line at end of stream is discarded.
public struct LineFramer: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = IngestFrame
    private var splitter: LineSplitter

    public init(maxLineBytes: Int) {
        splitter = LineSplitter(maxLineBytes: maxLineBytes)
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> IngestFrame? {
        splitter.next(&buffer)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> IngestFrame? {
        if let frame = splitter.next(&buffer) { return frame }
        buffer.moveReaderIndex(forwardBy: buffer.readableBytes)  // a partial last line is discarded
        return nil
    }
}
