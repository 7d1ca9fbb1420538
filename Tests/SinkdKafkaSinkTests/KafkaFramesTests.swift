import Testing
@testable import SinkdKafkaSink

@Suite struct KafkaFramesTests {
    /// An ApiVersions v0 response as the protocol guide lays it out: correlation id, error code,
    /// [api_key, min, max]: Produce 0-9, Metadata 0-12, ApiVersions 0-3, InitProducerId 0-4.
    static let apiVersionsResponse: [UInt8] = {
        var w = KafkaWriter()
        w.int32(7)
        w.int16(0)
        w.int32(4)
        for (key, min, max) in [(0, 0, 9), (3, 0, 12), (18, 0, 3), (22, 0, 4)] as [(Int16, Int16, Int16)] {
            w.int16(key); w.int16(min); w.int16(max)
        }
        var frame = KafkaWriter()
        frame.int32(Int32(w.bytes.count))
        frame.raw(w.bytes)
        return frame.bytes
    }()

    @Test func aResponseSplitAtEveryOffsetIsReadTheSame() throws {
        let whole = Self.apiVersionsResponse + Self.apiVersionsResponse
        for cut in 0...whole.count {
            var d = KafkaFrameDecoder()
            var frames: [[UInt8]] = []
            d.feed(whole[..<cut])
            while let f = try d.next() { frames.append(f) }
            d.feed(whole[cut...])
            while let f = try d.next() { frames.append(f) }
            #expect(frames.count == 2, "cut at \(cut)")
            let response = try KafkaApiVersions.response(frames[0])
            #expect(response.correlationID == 7 && response.errorCode == 0)
            #expect(response.versions[0] == .init(min: 0, max: 9))
            #expect(response.versions[22] == .init(min: 0, max: 4))
        }
    }

    @Test func theRequestIsHeaderV1WithTheClientID() {
        let frame = KafkaApiVersions.request(correlationID: 1, clientID: "sinkd")
        #expect(frame == [0, 0, 0, 15, 0, 18, 0, 0, 0, 0, 0, 1, 0, 5] + Array("sinkd".utf8))
    }

    /// A hostile or broken broker: a negative or huge frame size, a count that overruns the frame,
    /// every truncation of a valid answer. Errors, never a trap.
    @Test func badAnswersAreErrorsNeverTraps() throws {
        var d = KafkaFrameDecoder(maxFrameBytes: 1024)
        d.feed([0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: KafkaFrameDecoder.Oversized.self) { try d.next() }
        var big = KafkaFrameDecoder(maxFrameBytes: 1024)
        big.feed([0x00, 0x10, 0x00, 0x00])
        #expect(throws: KafkaFrameDecoder.Oversized.self) { try big.next() }
        let payload = Array(Self.apiVersionsResponse.dropFirst(4))
        for n in 0..<payload.count {
            #expect(throws: KafkaReader.Truncated.self) { try KafkaApiVersions.response(Array(payload.prefix(n))) }
        }
        var lying = KafkaWriter()
        lying.int32(1); lying.int16(0); lying.int32(Int32.max)
        #expect(throws: KafkaReader.Truncated.self) { try KafkaApiVersions.response(lying.bytes) }
        var r = KafkaReader(Array(repeating: 0xFF, count: 11))
        #expect(throws: KafkaReader.Truncated.self) { try r.uvarint("x") }
    }
}
