import Testing
@testable import SinkdKafkaSink

/// The idempotent producer's rules and the decision per partition answer, as plain values.
@Suite struct KafkaProducerStateTests {
    static let key = KafkaProducerState.PartitionKey(topic: "orders", partition: 2)

    @Test func sequencesAdvanceOnlyOnAcknowledgementAndStartAgainUnderANewProducer() {
        var s = KafkaProducerState()
        #expect(!s.hasProducer)
        s.reset(producerID: 7, epoch: 0)
        let g = s.generation
        #expect(s.producer(for: Self.key) == .init(id: 7, epoch: 0, baseSequence: 0))
        s.acknowledged(Self.key, baseSequence: 0, count: 10, generation: g)
        #expect(s.producer(for: Self.key).baseSequence == 10)
        // An answer about an older producer changes nothing.
        s.acknowledged(Self.key, baseSequence: 10, count: 5, generation: g - 1)
        #expect(s.producer(for: Self.key).baseSequence == 10)
        // Sequences wrap at Int32.max, as Kafka's do.
        s.acknowledged(Self.key, baseSequence: Int32.max - 1, count: 3, generation: g)
        #expect(s.producer(for: Self.key).baseSequence == 1)
        // Dropped (an unresolved batch): the next send asks for a new id; sequences restart.
        s.invalidate(generation: g - 1)
        #expect(s.hasProducer, "an old generation's invalidation is ignored")
        s.invalidate(generation: g)
        #expect(!s.hasProducer)
        s.reset(producerID: 8, epoch: 0)
        #expect(s.producer(for: Self.key) == .init(id: 8, epoch: 0, baseSequence: 0))
        #expect(s.generation == g + 1)
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
        #expect(d(10, count: 1) == .permanent(indices: [0], reason: "MESSAGE_TOO_LARGE"), "one record too large is a dead letter")
        #expect(d(18, count: 1) == .permanent(indices: [0], reason: "RECORD_LIST_TOO_LARGE"))
        #expect(d(87, count: 4, errors: [2, 9]) == .permanent(indices: [2], reason: "INVALID_RECORD"), "only the records the broker named; an index out of range is ignored")
        #expect(d(87, count: 2) == .permanent(indices: [0, 1], reason: "INVALID_RECORD"))
        #expect(d(29) == .pause(reason: "TOPIC_AUTHORIZATION_FAILED"))
        #expect(d(9999) == .retry(refreshMetadata: false, reason: "error 9999"), "an unknown code is retried, never a dead letter")
        #expect(KafkaProduceDecision.decide(errorCode: 10, count: 1, recordErrors: [], message: "max 1048576") == .permanent(indices: [0], reason: "MESSAGE_TOO_LARGE: max 1048576"))
    }
}
