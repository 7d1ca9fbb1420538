import SinkdDelivery
import Testing
@testable import SinkdKafkaSink

/// One send's rounds with plain values (issue 31: they lived inside KafkaTopicClient.send): parts
/// in WAL order per partition, what each answer does to its part, every record's outcome, giving up.
@Suite struct KafkaSendRoundsTests {
    static func rounds(_ parts: [Int32: [[Int]]], records: Int) -> KafkaSendRounds {
        KafkaSendRounds(topic: "t", records: records, parts: parts)
    }

    @Test func partsOfAPartitionGoOneAtATimeInOrder() throws {
        var r = Self.rounds([0: [[0, 1], [2]], 1: [[3]]], records: 4)
        #expect(r.startRound(deadlinePassed: false) == .send(backoffMillis: 0))
        #expect(r.heads(generation: 1) == [0, 1])
        #expect(r.head(0).indices == [0, 1], "the first part of partition 0; [2] waits for it")
        r.assigned(0, base: 10, generation: 1)
        r.assigned(1, base: 0, generation: 1)
        try r.apply(.delivered, to: 0)
        try r.apply(.delivered, to: 1)
        #expect(r.hasWork)
        _ = r.startRound(deadlinePassed: false)
        #expect(r.heads(generation: 1) == [0])
        #expect(r.head(0).indices == [2] && r.head(0).base == nil, "the next part, not yet handed sequences")
        r.assigned(0, base: 12, generation: 1)
        try r.apply(.delivered, to: 0)
        #expect(!r.hasWork)
        #expect(r.finalOutcomes == Array(repeating: .delivered, count: 4))
    }

    @Test func aResendKeepsItsSequencesAndAsksForABackoffAndMetadata() throws {
        var r = Self.rounds([0: [[0]]], records: 1)
        _ = r.startRound(deadlinePassed: false)
        _ = r.heads(generation: 1)
        r.assigned(0, base: 5, generation: 1)
        try r.apply(.resend(reason: "NOT_LEADER_OR_FOLLOWER", refresh: true, backoff: true), to: 0)
        #expect(r.refresh)
        #expect(r.head(0).base == 5, "the same sequences: a broker that stored it stores it once")
        if case .send(let wait) = r.startRound(deadlinePassed: false) {
            #expect(wait > 0)
        } else {
            Issue.record("gave up early")
        }
        #expect(!r.refresh, "asked for once per round")
        #expect(r.heads(generation: 1) == [0] && r.head(0).base == 5)
        // A new producer meanwhile: the part is handed new sequences.
        #expect(r.heads(generation: 2) == [0] && r.head(0).base == nil)
    }

    @Test func aSplitSendsTwoHalvesTheSecondAfterTheFirst() throws {
        var r = Self.rounds([0: [[0, 1, 2, 3]]], records: 4)
        _ = r.startRound(deadlinePassed: false)
        _ = r.heads(generation: 1)
        r.assigned(0, base: 0, generation: 1)
        try r.apply(.split(second: 2, reason: "MESSAGE_TOO_LARGE"), to: 0)
        #expect(r.head(0).indices == [0, 1] && r.head(0).base == 0)
        try r.apply(.delivered, to: 0)
        #expect(r.head(0).indices == [2, 3] && r.head(0).base == 2)
    }

    @Test func refusedRecordsAreDeadLetteredAndTheRestSentAnew() throws {
        var r = Self.rounds([0: [[0, 1, 2]]], records: 3)
        _ = r.startRound(deadlinePassed: false)
        _ = r.heads(generation: 1)
        r.assigned(0, base: 0, generation: 1)
        try r.apply(.permanent(indices: [1], reason: "INVALID_RECORD"), to: 0)
        #expect(r.head(0).indices == [0, 2] && r.head(0).base == nil, "the rest, under new sequences")
        #expect(r.outcomes[1] == .permanent("kafka topic t partition 0: INVALID_RECORD"))
        try r.apply(.delivered, to: 0)
        #expect(r.finalOutcomes.map { $0 == .delivered } == [true, false, true])
    }

    @Test func aPauseThrowsAndAFailedRequestResends() throws {
        var r = Self.rounds([0: [[0]], 1: [[1]]], records: 2)
        _ = r.startRound(deadlinePassed: false)
        _ = r.heads(generation: 1)
        try r.requestFailed([0, 1], error: "connection reset")
        #expect(r.refresh && r.hasWork)
        #expect(throws: SinkConnectionError.self) { try r.apply(.pause(reason: "TOPIC_AUTHORIZATION_FAILED"), to: 0) }
    }

    @Test func pastTheDeadlineEveryUnsettledRecordIsRetryableAndTheOpenPartsAreNamed() throws {
        var r = Self.rounds([0: [[0]], 1: [[1]]], records: 2)
        _ = r.startRound(deadlinePassed: true)  // the first round is always sent
        _ = r.heads(generation: 1)
        r.assigned(0, base: 7, generation: 1)
        r.assigned(1, base: 3, generation: 1)
        try r.apply(.delivered, to: 1)
        try r.apply(.resend(reason: "REQUEST_TIMED_OUT", refresh: false, backoff: true), to: 0)
        #expect(r.startRound(deadlinePassed: true) == .gaveUp)
        #expect(r.finalOutcomes == [.retryable("kafka: partition 0: REQUEST_TIMED_OUT"), .delivered])
        #expect(r.unacknowledged.map(\.partition) == [0], "its sequences leave a gap: the producer is dropped")
    }
}
