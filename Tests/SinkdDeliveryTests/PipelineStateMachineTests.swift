import Testing
import SinkdCore
@testable import SinkdDelivery

/// The pipeline's decisions with plain values: no sockets, no clocks, no randomness.
@Suite struct PipelineStateMachineTests {
    static func records(_ seqs: ClosedRange<UInt64>, bytes: Int = 10) -> [SequencedRecord] {
        seqs.map {
            SequencedRecord(
                seq: $0, record: EventRecord(id: "r\($0)", sink: "t:x", payload: [UInt8](repeating: 0x61, count: bytes))
            )
        }
    }

    static func machine(
        batch: Int = 3, batchBytes: Int = 1 << 20, messageBytes: Int = 1 << 20, inFlight: Int = 2,
        ordering: OrderingMode = .relaxed,
        maxAttempts: Int = 0, maxAge: Duration = .zero, linger: Duration = .zero
    ) -> PipelineStateMachine {
        var options = PipelineOptions(poolSize: 1, maxInFlight: inFlight, batchSize: batch, linger: linger)
        options.ordering = ordering
        options.retry.maxAttempts = maxAttempts
        options.retry.maxAge = maxAge
        return PipelineStateMachine(
            settings: .init(
                limits: SinkLimits(maxBatchCount: batch, maxBatchBytes: batchBytes, maxMessageBytes: messageBytes),
                options: options))
    }

    static func seqs(_ action: PipelineStateMachine.Action) -> [UInt64]? {
        if case .send(_, let records) = action { return records.map(\.seq) }
        return nil
    }

    static func id(_ action: PipelineStateMachine.Action) -> UInt64 {
        if case .send(let id, _) = action { return id }
        return 0
    }

    /// A completion's effects come in the arrays the last one's recycle gave back (no heap calls
    /// per batch for them), holding only this completion's records.
    @Test func recycledEffectsArraysCarryOnlyTheNextCompletionsRecords() {
        var m = Self.machine(batch: 3, inFlight: 2)
        _ = m.add(Self.records(1...6))
        let first = Self.id(m.next(now: 1))
        let second = Self.id(m.next(now: 1))
        var effects = m.completed(
            batchID: first, outcomes: Array(repeating: .delivered, count: 3), now: 2, random: { 0 })
        #expect(effects.finished == [1, 2, 3])
        let storage = effects.finished.withUnsafeBufferPointer { $0.baseAddress }
        m.recycle(&effects)
        let next = m.completed(
            batchID: second, outcomes: [.delivered, .permanent("no"), .retryable("later")], now: 3, random: { 0 })
        #expect(next.finished == [4, 5], "the delivered and the dead-lettered record, nothing of the first batch")
        #expect(next.deliveredAcceptedAt.count == 1)
        #expect(next.finished.withUnsafeBufferPointer { $0.baseAddress } == storage, "the recycled array")
    }

    /// linger: a batch that is not full waits for company only while another is in flight, for at
    /// most `linger` from when it was first found not full; a full one and an idle sink never wait.
    @Test func aBatchThatIsNotFullLingersOnlyWhileAnotherIsInFlight() {
        var m = Self.machine(batch: 4, inFlight: 4, linger: .milliseconds(5))
        _ = m.add(Self.records(1...2))
        #expect(Self.seqs(m.next(now: 100)) == [1, 2], "nothing in flight: a partial batch leaves at once")
        _ = m.add(Self.records(3...3))
        #expect(m.next(now: 101) == .wait(untilMillis: 106), "one in flight: it waits up to 5 ms")
        _ = m.add(Self.records(4...5))
        #expect(m.next(now: 103) == .wait(untilMillis: 106), "still not full: the same deadline, not a new one")
        #expect(Self.seqs(m.next(now: 106)) == [3, 4, 5], "the deadline passed")
        _ = m.add(Self.records(6...9))
        #expect(Self.seqs(m.next(now: 106)) == [6, 7, 8, 9], "a full batch never waits")
        _ = m.add(Self.records(10...10))
        #expect(m.next(now: 107) == .wait(untilMillis: 112))
        for id: UInt64 in 1...3 {
            _ = m.completed(batchID: id, outcomes: Array(repeating: .delivered, count: 4), now: 108, random: { 0 })
        }
        #expect(Self.seqs(m.next(now: 108)) == [10], "nothing in flight any more: it leaves before its deadline")

        var off = Self.machine(batch: 4, inFlight: 4)
        _ = off.add(Self.records(1...1))
        _ = off.next(now: 0)
        _ = off.add(Self.records(2...2))
        #expect(Self.seqs(off.next(now: 0)) == [2], "linger 0: partial batches leave at once")
    }

    /// Failed batches and retries go back in one pass (not one shift of the queue per record); the
    /// waiting records stay in seq order whichever batch comes back first and wherever it belongs.
    @Test func recordsPutBackKeepSeqOrderWhicheverBatchReturnsFirst() {
        var m = Self.machine(batch: 3, inFlight: 3)
        _ = m.add(Self.records(1...12))
        let a = Self.id(m.next(now: 0)), b = Self.id(m.next(now: 0)), c = Self.id(m.next(now: 0))
        #expect(m.waiting.map(\.seq) == [10, 11, 12])
        _ = m.connectionFailed(batchID: b, error: "cut", now: 0, random: { 0 })  // 4-6: not at the front: merged
        #expect(m.waiting.map(\.seq) == [4, 5, 6, 10, 11, 12])
        _ = m.connectionFailed(batchID: c, error: "cut", now: 0, random: { 0 })  // 7-9: between
        #expect(m.waiting.map(\.seq) == Array(4...12))
        _ = m.connectionFailed(batchID: a, error: "cut", now: 0, random: { 0 })  // 1-3: the front's free slots
        #expect(m.waiting.map(\.seq) == Array(1...12))
        #expect(m.waiting.filter { $0.seq <= 9 }.allSatisfy { $0.lastError == "cut" })

        // Retries of some records of a batch merge among the waiting ones.
        var r = Self.machine(batch: 4, inFlight: 2)
        _ = r.add(Self.records(1...10))
        let first = Self.id(r.next(now: 0))
        _ = r.next(now: 0)
        let e = r.completed(
            batchID: first, outcomes: [.delivered, .retryable("busy"), .delivered, .retryable("busy")], now: 5,
            random: { 0 })
        #expect(e.finished == [1, 3])
        #expect(e.retried == 2)
        #expect(r.waiting.map(\.seq) == [2, 4, 9, 10])
        #expect(r.heldRecords == 8)
    }

    @Test func batchesInWALOrderWithinCountAndInFlightLimits() {
        var m = Self.machine()
        _ = m.add(Self.records(1...8))
        #expect(Self.seqs(m.next(now: 0)) == [1, 2, 3])
        #expect(Self.seqs(m.next(now: 0)) == [4, 5, 6])
        #expect(m.next(now: 0) == .wait(untilMillis: nil), "two batches in flight is the limit")
        let e = m.completed(batchID: 1, outcomes: Array(repeating: .delivered, count: 3), now: 1, random: { 0 })
        #expect(e.finished == [1, 2, 3])
        #expect(e.delivered == 3)
        #expect(Self.seqs(m.next(now: 1)) == [7, 8])
    }

    /// A long run of batches taken from the front (the queue's head moves and is compacted now and
    /// then), with a retried record going back in front of it: order and counts stay exact.
    @Test func longRunsKeepOrderAcrossCompactionsAndRetries() {
        var m = Self.machine(batch: 7, inFlight: 1)
        _ = m.add(Self.records(1...5000))
        var sent: [UInt64] = []
        var retriedOnce = false
        while case .send(let id, let records) = m.next(now: 10) {
            sent += records.map(\.seq)
            var outcomes = Array(repeating: DeliveryOutcome.delivered, count: records.count)
            if !retriedOnce, records.first!.seq > 2000 {
                outcomes[0] = .retryable("once", retryAfter: .zero)
                retriedOnce = true
            }
            _ = m.completed(batchID: id, outcomes: outcomes, now: 10, random: { 0 })
            #expect(m.heldRecords == m.waiting.count)
        }
        #expect(retriedOnce)
        #expect(sent.count == 5001)
        #expect(Set(sent).count == 5000)
        #expect(m.isIdle)
        // The retried record left again first, right after its own batch (nothing was in front).
        // (Batches of 7 from seq 1: the first to start above 2000 starts at 2003.)
        let retried = sent.firstIndex(of: 2003)!
        #expect(sent[retried + 7] == 2003)
        #expect(sent[retried + 8] == 2010)
    }

    @Test func batchesRespectBytes() {
        var m = Self.machine(batch: 10, batchBytes: 25)
        _ = m.add(Self.records(1...5, bytes: 10))
        #expect(Self.seqs(m.next(now: 0)) == [1, 2])
        #expect(Self.seqs(m.next(now: 0)) == [3, 4])
    }

    @Test func oversizedRecordIsDeadLetteredWithoutBeingSent() {
        var m = Self.machine(messageBytes: 5)
        let e = m.add(Self.records(1...1, bytes: 6) + Self.records(2...2, bytes: 5))
        #expect(e.finished == [1])
        #expect(e.deadLetters.map(\.item.seq) == [1])
        #expect(e.deadLetters.first?.reason == "the message is 6 bytes; this sink takes at most 5")
        #expect(Self.seqs(m.next(now: 0)) == [2])
    }

    @Test func retryableRecordsWaitWithBackoffAndOthersOvertakeThem() {
        var m = Self.machine(batch: 2, inFlight: 1)
        _ = m.add(Self.records(1...4))
        let first = m.next(now: 1000)
        let e = m.completed(
            batchID: Self.id(first), outcomes: [.retryable("busy"), .delivered], now: 1000, random: { 0.5 })
        #expect(e.finished == [2])
        #expect(e.retried == 1)
        // Attempt 1 failed: delay = 0.5 × 200 ms.
        #expect(Self.seqs(m.next(now: 1000)) == [3, 4], "relaxed: the retrying record is overtaken")
        _ = m.completed(batchID: 2, outcomes: [.delivered, .delivered], now: 1050, random: { 0.5 })
        #expect(m.next(now: 1050) == .wait(untilMillis: 1100))
        #expect(Self.seqs(m.next(now: 1100)) == [1])
        let again = m.completed(batchID: 3, outcomes: [.retryable("busy")], now: 1100, random: { 1.0 })
        #expect(again.retried == 1)
        #expect(m.next(now: 1100) == .wait(untilMillis: 1500), "attempt 2 failed: ceiling 400 ms")
    }

    @Test func strictOrderingKeepsAFailingRecordAtTheHead() {
        var m = Self.machine(batch: 2, inFlight: 5, ordering: .strict)
        _ = m.add(Self.records(1...4))
        #expect(Self.seqs(m.next(now: 0)) == [1, 2])
        #expect(m.next(now: 0) == .wait(untilMillis: nil), "strict: one batch in flight")
        _ = m.completed(batchID: 1, outcomes: [.retryable("no"), .retryable("no")], now: 0, random: { 0.5 })
        #expect(m.next(now: 50) == .wait(untilMillis: 100), "nothing overtakes the head")
        #expect(Self.seqs(m.next(now: 100)) == [1, 2])
    }

    @Test func retryAfterFromTheBrokerIsHonoured() {
        var m = Self.machine(batch: 1, inFlight: 1)
        _ = m.add(Self.records(1...1))
        _ = m.next(now: 0)
        _ = m.completed(batchID: 1, outcomes: [.retryable("429", retryAfter: .seconds(5))], now: 0, random: { 0.1 })
        #expect(m.next(now: 0) == .wait(untilMillis: 5000))
    }

    @Test func exhaustedRetriesAndPermanentErrorsAreDeadLettered() {
        var m = Self.machine(batch: 2, inFlight: 1, maxAttempts: 2)
        _ = m.add(Self.records(1...2))
        _ = m.next(now: 0)
        let e1 = m.completed(
            batchID: 1, outcomes: [.retryable("timeout"), .permanent("NOT_FOUND - no queue 'x'")], now: 0, random: { 0 }
        )
        #expect(e1.deadLetters.map(\.reason) == ["NOT_FOUND - no queue 'x'"])
        #expect(e1.finished == [2])
        _ = m.next(now: 0)
        let e2 = m.completed(batchID: 2, outcomes: [.retryable("timeout")], now: 10, random: { 0 })
        #expect(e2.deadLetters.map(\.reason) == ["gave up after 2 attempts: timeout"])
        #expect(e2.deadLetters.first?.item.attempts == 2)
        #expect(e2.deadLetters.first?.item.firstAttemptMillis == 0)
        #expect(e2.deadLetters.first?.item.lastAttemptMillis == 0)
        #expect(e2.finished == [1])
        #expect(m.isIdle)
    }

    @Test func maxAgeEndsRetries() {
        var m = Self.machine(batch: 1, inFlight: 1, maxAge: .seconds(1))
        _ = m.add(Self.records(1...1))
        _ = m.next(now: 0)
        #expect(m.completed(batchID: 1, outcomes: [.retryable("x")], now: 500, random: { 0 }).deadLetters.isEmpty)
        _ = m.next(now: 500)
        #expect(m.completed(batchID: 2, outcomes: [.retryable("x")], now: 1000, random: { 0 }).deadLetters.count == 1)
    }

    @Test func connectionFailurePausesTheSinkWithoutSpendingAttempts() {
        var m = Self.machine(batch: 2, inFlight: 3, maxAttempts: 1)
        _ = m.add(Self.records(1...6))
        _ = m.next(now: 0)
        _ = m.next(now: 0)
        let down = m.connectionFailed(batchID: 1, error: "connection refused", now: 0, random: { 0 })
        #expect(down.healthChanged == .down("connection refused"))
        #expect(
            m.connectionFailed(batchID: 2, error: "connection refused", now: 0, random: { 0 }).healthChanged == nil,
            "logged once per state change")
        #expect(m.health == .down("connection refused"))
        // Reconnect backoff: 0.5 × 500 ms for the first failure (jitter in [0.5, 1)).
        guard case .wait(let until?) = m.next(now: 0) else {
            Issue.record("expected a pause")
            return
        }
        #expect(until >= 250)
        // After two failures the probe starts two records further (relaxed ordering).
        #expect(Self.seqs(m.next(now: until)) == [3, 4], "a probe batch, attempts untouched")
        #expect(m.next(now: until) == .wait(untilMillis: nil), "one batch at a time while down")
        let up = m.completed(batchID: 3, outcomes: [.delivered, .delivered], now: until, random: { 0 })
        #expect(up.healthChanged == .up)
        #expect(up.deadLetters.isEmpty, "max_attempts 1 was not spent by the connection failure")
        #expect(Self.seqs(m.next(now: until)) == [1, 2], "up again: from the front")
        #expect(Self.seqs(m.next(now: until)) == [5, 6])
    }

    /// Issue 33: under a stalled HTTP server the log repeated "down"/"up again" pairs within a
    /// millisecond: batches already in flight when the sink went down completed afterwards and
    /// each flipped it up. Only a batch sent after going down can show it is up again.
    @Test func aBatchSentBeforeTheSinkWentDownDoesNotBringItUp() {
        var m = Self.machine(batch: 2, inFlight: 3)
        _ = m.add(Self.records(1...6))
        _ = m.next(now: 0)
        _ = m.next(now: 0)
        _ = m.next(now: 0)
        #expect(
            m.connectionFailed(batchID: 1, error: "stalled", now: 0, random: { 0 }).healthChanged == .down("stalled"))
        let late = m.completed(
            batchID: 2, outcomes: [.retryable("timeout"), .retryable("timeout")], now: 1, random: { 0 })
        #expect(late.healthChanged == nil, "in flight before the sink went down: proves nothing")
        #expect(m.health == .down("stalled"))
        #expect(
            m.completed(batchID: 3, outcomes: [.delivered, .delivered], now: 2, random: { 0 }).healthChanged == nil)
        guard case .wait(let until?) = m.next(now: 2) else {
            Issue.record("expected the reconnect pause")
            return
        }
        let probe = m.next(now: until)
        guard case .send(let id, _) = probe else {
            Issue.record("expected a probe batch, got \(probe)")
            return
        }
        #expect(
            m.completed(batchID: id, outcomes: [.delivered, .delivered], now: until, random: { 0 }).healthChanged
                == .up, "the probe's answer does")
    }

    /// A sink that is down reads no further than one batch (its retry's); back up, it reads its
    /// whole window again.
    @Test func aDownSinkHoldsOneBatchNotItsWindow() {
        var m = Self.machine(batch: 10, inFlight: 2)
        _ = m.add(Self.records(1...5))
        let first = m.next(now: 0)
        #expect(
            m.connectionFailed(batchID: Self.id(first), error: "refused", now: 0, random: { 0 }).healthChanged
                == .down("refused"))
        #expect(m.wantsRecords, "5 held, one batch is 10")
        _ = m.add(Self.records(6...10))
        #expect(!m.wantsRecords, "down: one batch held is enough")
        guard case .wait(let until?) = m.next(now: 1) else {
            Issue.record("expected a wait for the reconnect backoff")
            return
        }
        let probe = m.next(now: until)
        #expect(
            m.completed(
                batchID: Self.id(probe), outcomes: Array(repeating: .delivered, count: Self.seqs(probe)?.count ?? 0),
                now: until, random: { 0 }
            ).healthChanged == .up)
        #expect(m.wantsRecords, "up again: the window is open")
        _ = m.add(Self.records(11...900))
        #expect(m.wantsRecords, "\(m.heldRecords) held, the window is \(m.settings.bufferLimit)")
    }

    @Test func readingStopsAtTheBufferLimit() {
        var m = Self.machine(batch: 10, inFlight: 1)
        #expect(m.settings.bufferLimit == 1000)
        _ = m.add(Self.records(1...999))
        #expect(m.wantsRecords)
        _ = m.add(Self.records(1000...1000))
        #expect(!m.wantsRecords)
    }

    @Test func readingStopsAtTheByteLimitAndResumesAsRecordsFinish() {
        var options = PipelineOptions(poolSize: 1, maxInFlight: 1, batchSize: 2)
        options.retry.maxAttempts = 1
        var m = PipelineStateMachine(
            settings: .init(
                limits: SinkLimits(maxBatchCount: 2, maxBatchBytes: 1 << 20, maxMessageBytes: 1 << 20),
                options: options, byteLimit: 250))
        _ = m.add(Self.records(1...2, bytes: 100))
        #expect(m.heldBytes == 200 && m.wantsRecords && m.bytesWanted == 50)
        _ = m.add(Self.records(3...3, bytes: 100))
        #expect(m.heldBytes == 300 && !m.wantsRecords, "over the limit by at most the last read")
        #expect(m.bytesWanted == 1, "never zero: the reader always takes at least one record")
        let batch = m.next(now: 0)
        _ = m.completed(batchID: Self.id(batch), outcomes: [.delivered, .permanent("no")], now: 1, random: { 0 })
        #expect(m.heldBytes == 100 && m.wantsRecords, "delivered and dead-lettered records leave the budget")
        let retry = m.next(now: 1)
        _ = m.completed(batchID: Self.id(retry), outcomes: [.retryable("later")], now: 2, random: { 0 })
        #expect(m.heldBytes == 0, "a record whose attempts are spent leaves it too")
        _ = m.add(Self.records(4...5, bytes: 100))
        _ = m.drainWaiting()
        #expect(m.heldBytes == 0)
    }

    @Test func retrySchedule() {
        var policy = RetryPolicy()
        policy.initialBackoff = .milliseconds(200)
        policy.multiplier = 2
        policy.maxBackoff = .seconds(60)
        let s = RetrySchedule(policy)
        #expect(s.ceiling(afterAttempts: 1) == .milliseconds(200))
        #expect(s.ceiling(afterAttempts: 2) == .milliseconds(400))
        #expect(s.ceiling(afterAttempts: 5) == .milliseconds(3200))
        #expect(s.ceiling(afterAttempts: 20) == .seconds(60))
        #expect(s.ceiling(afterAttempts: 10_000) == .seconds(60))
        #expect(s.delay(afterAttempts: 3, unit: 0.25) == .milliseconds(200))
        #expect(s.delay(afterAttempts: 1, unit: 0, retryAfter: .seconds(3)) == .seconds(3))
        #expect(!s.isExhausted(attempts: 1_000_000, firstAttemptMillis: 0, nowMillis: 1 << 40), "unlimited by default")
    }
}

/// The total byte budget shared by pipelines: a waiter is called once bytes are released.
@Suite struct HeldBytesBudgetTests {
    final class Calls: @unchecked Sendable {
        var count = 0
    }

    @Test func waitersAreCalledWhenBytesAreReleasedOrTheLimitRises() {
        let budget = HeldBytesBudget(limit: 100)
        budget.adjust(by: 100)
        #expect(budget.available == 0)
        let calls = Calls()
        budget.whenAvailable { calls.count += 1 }
        budget.adjust(by: 10)
        #expect(calls.count == 0, "taking more wakes nobody")
        budget.adjust(by: -20)
        #expect(calls.count == 1 && budget.available == 10)
        budget.adjust(by: 10)
        budget.whenAvailable { calls.count += 1 }
        budget.setLimit(200)
        #expect(calls.count == 2, "a reload raising the limit wakes waiters")
        budget.whenAvailable { calls.count += 1 }
        #expect(calls.count == 3, "called at once when bytes are available")
    }
}

/// Issue 18, item 1: one record that breaks the connection every time it is sent (a client
/// library refusing it in a way taken for a connection failure) never pins a relaxed sink.
@Suite struct PoisonProbeTests {
    @Test func aRecordThatAlwaysBreaksTheConnectionDoesNotStopTheOthers() {
        var m = PipelineStateMachineTests.machine(batch: 3, inFlight: 2)
        _ = m.add(PipelineStateMachineTests.records(1...11))
        var now: UInt64 = 0
        var delivered = Set<UInt64>()
        for _ in 0..<200 {
            guard case .send(let id, let records) = m.next(now: now) else {
                now += 1000
                continue
            }
            if records.contains(where: { $0.seq == 1 }) {
                _ = m.connectionFailed(batchID: id, error: "refused by the client library", now: now, random: { 0 })
            } else {
                _ = m.completed(
                    batchID: id, outcomes: Array(repeating: .delivered, count: records.count), now: now, random: { 0 })
                delivered.formUnion(records.map(\.seq))
            }
            if delivered.count == 10 { break }
        }
        #expect(delivered == Set(2...11), "every other record is delivered: \(delivered.sorted())")
    }

    @Test func strictOrderingKeepsTheHeadFirst() {
        var m = PipelineStateMachineTests.machine(batch: 3, inFlight: 1, ordering: .strict)
        _ = m.add(PipelineStateMachineTests.records(1...5))
        guard case .send(let id, _) = m.next(now: 0) else { Issue.record("no batch"); return }
        _ = m.connectionFailed(batchID: id, error: "down", now: 0, random: { 0 })
        guard case .send(_, let again) = m.next(now: 100_000) else { Issue.record("no probe"); return }
        #expect(again.first?.seq == 1)
    }
}

/// Found by the config-numbers fuzz table: `multiplier: 1.0` made each delay cost one loop turn
/// per attempt (forever, for a record retried without limit), and an age check trapped on a
/// clock far in the future.
@Suite struct RetryScheduleEdgeTests {
    @Test func aConstantBackoffCostsNothingWhateverTheAttempts() {
        var policy = RetryPolicy()
        policy.multiplier = 1.0
        policy.initialBackoff = .milliseconds(300)
        let schedule = RetrySchedule(policy)
        #expect(schedule.ceiling(afterAttempts: Int.max) == .milliseconds(300))
        #expect(schedule.ceiling(afterAttempts: 1) == .milliseconds(300))
    }

    @Test func ageChecksNeverTrap() {
        var policy = RetryPolicy()
        policy.maxAge = .seconds(60)
        let schedule = RetrySchedule(policy)
        #expect(schedule.isExhausted(attempts: 1, firstAttemptMillis: 0, nowMillis: .max))
        #expect(!schedule.isExhausted(attempts: 1, firstAttemptMillis: 1000, nowMillis: 1000))
    }
}
