import Testing
import SinkdKafkaSink

@Suite struct KafkaPartitionerTests {
    /// The values Kafka's own UtilsTest.testMurmur2 asserts for its Java implementation.
    @Test(
        arguments: [
            ("21", -973_932_308), ("foobar", -790_332_482), ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            ("abc", 479_470_107),
        ] as [(String, Int32)])
    func murmur2MatchesKafkasJavaImplementation(_ input: String, _ expected: Int32) {
        #expect(KafkaPartitioner.murmur2(Array(input.utf8)) == expected)
    }

    @Test func partitionIsThePositiveHashModuloThePartitionCount() {
        // toPositive clears the sign bit; it is not abs().
        #expect(KafkaPartitioner.toPositive(-973_932_308) == -973_932_308 & 0x7fff_ffff)
        #expect(KafkaPartitioner.partition(forKey: Array("21".utf8), partitions: 1) == 0)
        let p = KafkaPartitioner.partition(forKey: Array("21".utf8), partitions: 12)
        #expect(p == Int32((-973_932_308 & 0x7fff_ffff) % 12))
        #expect(p.map { (0..<12).contains($0) } == true)
        #expect(KafkaPartitioner.partition(forKey: Array("21".utf8), partitions: 0) == nil)
        #expect(KafkaPartitioner.partition(forKey: Array("21".utf8), partitions: -3) == nil)
    }
}
