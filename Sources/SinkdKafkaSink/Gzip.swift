import CZlib

/// gzip (RFC 1952) by zlib: Kafka's codec 1 wraps the batch's records in a gzip member, as the
/// Java client's GZIPOutputStream writes it.
enum Gzip {
    /// nil when zlib cannot (out of memory): the batch then goes uncompressed, which every broker takes.
    static func compress(_ input: [UInt8], level: Int32 = Z_DEFAULT_COMPRESSION) -> [UInt8]? {
        var stream = z_stream()
        // windowBits 15 + 16: a gzip header and trailer instead of zlib's.
        guard
            deflateInit2_(
                &stream, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION,
                Int32(MemoryLayout<z_stream>.size)) == Z_OK
        else {
            return nil
        }
        defer { deflateEnd(&stream) }
        // deflateBound covers the gzip wrapper too for these windowBits.
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(input.count))) + 32)
        var input = input
        let produced = input.withUnsafeMutableBufferPointer { inBuffer in
            output.withUnsafeMutableBufferPointer { outBuffer -> Int? in
                stream.next_in = inBuffer.baseAddress
                stream.avail_in = UInt32(inBuffer.count)
                stream.next_out = outBuffer.baseAddress
                stream.avail_out = UInt32(outBuffer.count)
                guard deflate(&stream, Z_FINISH) == Z_STREAM_END else { return nil }
                return outBuffer.count - Int(stream.avail_out)
            }
        }
        guard let produced else { return nil }
        output.removeLast(output.count - produced)
        return output
    }
}
