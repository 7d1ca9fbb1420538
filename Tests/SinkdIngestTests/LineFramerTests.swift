import NIOCore
import NIOEmbedded
import Testing
@testable import SinkdIngest
import NIOTestUtils

/// Byte-level fixtures for the framer, fed in arbitrary pieces.
@Suite struct LineFramerTests {
    /// The control socket's line decoder in every split NIO's verifier tries.
    @Test func theDecoderHandlesEverySplit() throws {
        let pairs: [(String, [IngestFrame])] = [
            ("a\n", [.line(ByteBuffer(string: "a"))]),
            ("bb\r\n\n", [.line(ByteBuffer(string: "bb")), .line(ByteBuffer())]),
            ("0123456789xyz\nok\n", [.tooLarge(bytes: 13), .line(ByteBuffer(string: "ok"))]),
        ]
        try ByteToMessageDecoderVerifier.verifyDecoder(stringInputOutputPairs: pairs) { LineFramer(maxLineBytes: 10) }
    }

    enum Out: Equatable {
        case line(String)
        case tooLarge(Int)
    }

    static func frames(_ chunks: [String], max: Int = 10) throws -> [Out] {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(LineFramer(maxLineBytes: max)))
        var out: [Out] = []
        func drain() throws {
            while let frame = try channel.readInbound(as: IngestFrame.self) {
                switch frame {
                case .line(let b): out.append(.line(String(buffer: b)))
                case .tooLarge(let n): out.append(.tooLarge(n))
                }
            }
        }
        for chunk in chunks {
            try channel.writeInbound(channel.allocator.buffer(string: chunk))
            try drain()
        }
        _ = try channel.finish(acceptAlreadyClosed: true)
        try drain()
        return out
    }

    @Test func splitsLinesWhateverTheChunking() throws {
        let text = "a\nbb\r\n\nccc\n"
        let expected: [Out] = [.line("a"), .line("bb"), .line(""), .line("ccc")]
        #expect(try Self.frames([text]) == expected)
        #expect(try Self.frames(text.map { String($0) }) == expected, "one byte at a time")
        #expect(try Self.frames(["a\nb", "b\r", "\n\ncc", "c\n"]) == expected)
    }

    @Test func longLineIsReportedOnceAndSkippedToItsNewline() throws {
        #expect(try Self.frames(["0123456789", "\n"]) == [.line("0123456789")], "exactly the limit is fine")
        #expect(try Self.frames(["0123456789A\nok\n"]) == [.tooLarge(11), .line("ok")])
        let chunks = ["xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xx\nok\n"]
        #expect(try Self.frames(chunks) == [.tooLarge(26), .line("ok")])
    }

    @Test func partialLastLineIsDiscarded() throws {
        #expect(try Self.frames(["a\nhalf"]) == [.line("a")])
        #expect(try Self.frames(["a\nhalfhalfhalfhalf"]) == [.line("a")])
    }
}
