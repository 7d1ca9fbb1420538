import Testing
@testable import SinkdKafkaSink

/// The idempotent producer's rules and the decision per partition answer, as plain values.
@Suite struct KafkaProducerStateTests {
    static let key = KafkaProducerState.PartitionKey(topic: "orders", partition: 2)

    @Test func batchesAreHandedSequencesAsTheyAreWrittenFiveAtATime() {
        var s = KafkaProducerState()
        #expect(!s.hasProducer && !s.hasRoom([Self.key]), "no producer: nothing is handed sequences")
        s.reset(producerID: 7, epoch: 0)
        let g = s.generation
        #expect(s.reserve(Self.key, count: 10) == .init(id: 7, epoch: 0, baseSequence: 0))
        for n in 1..<KafkaProducerState.windowSize {
            #expect(s.hasRoom([Self.key]))
            #expect(s.reserve(Self.key, count: 10).baseSequence == Int32(10 * n))
        }
        #expect(!s.hasRoom([Self.key]), "five on the wire: the broker's deduplication window")
        #expect(s.hasRoom([.init(topic: "orders", partition: 3)]), "another partition has its own window")
        #expect(s.isFirst(Self.key, base: 0, generation: g) && !s.isFirst(Self.key, base: 10, generation: g))
        s.acknowledged(Self.key, base: 0, generation: g)
        #expect(s.hasRoom([Self.key]) && s.isFirst(Self.key, base: 10, generation: g))
        #expect(s.nextSequence(Self.key) == 50)
        // An answer about an older producer changes nothing.
        s.acknowledged(Self.key, base: 10, generation: g - 1)
        #expect(s.isOpen(Self.key, base: 10, generation: g))
        #expect(!s.wasFollowing(Self.key, base: 0, generation: g) && s.wasFollowing(Self.key, base: 20, generation: g))
    }

    /// A failed batch: nothing new on its partition until the failed ones were sent again, each in
    /// its turn (the first unacknowledged), with the same sequences.
    @Test func failedBatchesAreSentAgainInSequenceOrder() {
        var s = KafkaProducerState()
        s.reset(producerID: 7, epoch: 0)
        let g = s.generation
        for _ in 0..<3 { _ = s.reserve(Self.key, count: 10) }  // 0, 10, 20
        s.failed(Self.key, base: 0, generation: g)  // NOT_LEADER_OR_FOLLOWER
        s.failed(Self.key, base: 10, generation: g)  // OUT_OF_ORDER behind it
        #expect(!s.hasRoom([Self.key]), "a failed batch waits: no new one behind it")
        #expect(s.isFirst(Self.key, base: 0, generation: g) && !s.isFirst(Self.key, base: 10, generation: g))
        s.resending(Self.key, base: 0, generation: g)
        #expect(s.producer(base: 0).baseSequence == 0)
        #expect(!s.hasRoom([Self.key]), "10 still waits")
        s.acknowledged(Self.key, base: 0, generation: g)
        #expect(s.isFirst(Self.key, base: 10, generation: g))
        s.resending(Self.key, base: 10, generation: g)
        #expect(
            !s.wasFollowing(Self.key, base: 10, generation: g),
            "sent again as the first: an OUT_OF_ORDER now means the broker lost track")
        #expect(s.hasRoom([Self.key]))
        s.acknowledged(Self.key, base: 10, generation: g)
        s.acknowledged(Self.key, base: 20, generation: g)
        #expect(s.reserve(Self.key, count: 1).baseSequence == 30, "sequences carry on: nothing was lost")
    }

    @Test func aSplitKeepsTheRangeSoLaterBatchesStayValid() {
        var s = KafkaProducerState()
        s.reset(producerID: 7, epoch: 0)
        let g = s.generation
        _ = s.reserve(Self.key, count: 10)
        _ = s.reserve(Self.key, count: 4)  // 10
        #expect(s.split(Self.key, base: 0, firstCount: 5, generation: g) == 5)
        #expect(
            s.isFirst(Self.key, base: 0, generation: g) && s.isOpen(Self.key, base: 5, generation: g)
                && !s.hasRoom([Self.key]))
        #expect(s.split(Self.key, base: 10, firstCount: 4, generation: g) == nil, "a batch of 4 does not split at 4")
        s.resending(Self.key, base: 0, generation: g)
        s.acknowledged(Self.key, base: 0, generation: g)
        #expect(s.isFirst(Self.key, base: 5, generation: g))
        #expect(s.nextSequence(Self.key) == 14)
    }

    @Test func aGapDropsTheProducerAndSequencesStartAgain() {
        var s = KafkaProducerState()
        s.reset(producerID: 7, epoch: 0)
        let g = s.generation
        _ = s.reserve(Self.key, count: 3)
        s.invalidate(generation: g - 1)
        #expect(s.hasProducer, "an old generation's drop is ignored")
        s.invalidate(generation: g)
        #expect(
            !s.hasProducer && !s.isOpen(Self.key, base: 0, generation: g),
            "every batch of the dropped producer is sent anew")
        #expect(s.generation == g + 1)
        s.reset(producerID: 8, epoch: 0)
        #expect(s.reserve(Self.key, count: 1) == .init(id: 8, epoch: 0, baseSequence: 0))
        // Sequences wrap at Int32.max, as Kafka's do.
        s.skip(Self.key, count: Int(Int32.max) - 2)
        #expect(s.reserve(Self.key, count: 3).baseSequence == Int32.max - 1)
        #expect(s.nextSequence(Self.key) == 1)
    }

    @Test func eachAnswerHasOneDecision() {
        func d(_ code: Int16, count: Int = 3, errors: [Int32] = []) -> KafkaProduceDecision {
            KafkaProduceDecision.decide(errorCode: code, count: count, recordErrors: errors, message: nil)
        }
        #expect(d(0) == .delivered)
        #expect(d(46) == .delivered, "DUPLICATE_SEQUENCE_NUMBER: stored already (Tansu's answer to a resent batch)")
        #expect(d(6) == .retry(refreshMetadata: true, reason: "NOT_LEADER_OR_FOLLOWER"))
        #expect(d(19) == .retry(refreshMetadata: false, reason: "NOT_ENOUGH_REPLICAS"))
        #expect(d(59) == .resetProducer(reason: "UNKNOWN_PRODUCER_ID"))
        #expect(d(45) == .resetProducer(reason: "OUT_OF_ORDER_SEQUENCE_NUMBER"))
        #expect(d(10) == .split(reason: "MESSAGE_TOO_LARGE"), "a batch too large is sent in halves")
        #expect(
            d(10, count: 1) == .permanent(indices: [0], reason: "MESSAGE_TOO_LARGE"),
            "one record too large is a dead letter")
        #expect(d(18, count: 1) == .permanent(indices: [0], reason: "RECORD_LIST_TOO_LARGE"))
        #expect(
            d(87, count: 4, errors: [2, 9]) == .permanent(indices: [2], reason: "INVALID_RECORD"),
            "only the records the broker named; an index out of range is ignored")
        #expect(d(87, count: 2) == .permanent(indices: [0, 1], reason: "INVALID_RECORD"))
        #expect(d(29) == .pause(reason: "TOPIC_AUTHORIZATION_FAILED"))
        #expect(
            d(9999) == .retry(refreshMetadata: false, reason: "error 9999"),
            "an unknown code is retried, never a dead letter")
        #expect(
            KafkaProduceDecision.decide(errorCode: 10, count: 1, recordErrors: [], message: "max 1048576")
                == .permanent(indices: [0], reason: "MESSAGE_TOO_LARGE: max 1048576"))
    }
}
