import Testing
@testable import SinkdKafkaSink

@Suite struct KafkaInitProducerIdTests {
    @Test func theRequestIsV3WithANullTransactionalIdAndANewProducer() {
        let frame = KafkaInitProducerId.request(correlationID: 9, clientID: "sinkd")
        let body: [UInt8] =
            [0, 22, 0, 3, 0, 0, 0, 9, 0, 5] + Array("sinkd".utf8) + [0]  // header v2
            + [0] + [0x7F, 0xFF, 0xFF, 0xFF] + [UInt8](repeating: 0xFF, count: 8) + [0xFF, 0xFF] + [0]
        #expect(frame == [0, 0, 0, UInt8(body.count)] + body)
    }

    @Test func theResponseIsReadAndEveryTruncationIsAnError() throws {
        var w = KafkaWriter()
        w.int32(9); w.uvarint(0)  // header v1
        w.int32(0); w.int16(0); w.int64(4242); w.int16(7); w.uvarint(0)
        let response = try KafkaInitProducerId.response(w.bytes)
        #expect(response == .init(correlationID: 9, errorCode: 0, producerID: 4242, producerEpoch: 7))
        for n in 0..<(w.bytes.count - 1) {
            #expect(throws: KafkaReader.Truncated.self) { try KafkaInitProducerId.response(Array(w.bytes.prefix(n))) }
        }
    }
}
