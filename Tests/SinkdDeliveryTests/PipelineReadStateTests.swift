import Testing
@testable import SinkdDelivery

/// A pipeline's reading decisions with plain values (issue 31: flags in SinkPipeline.run before).
@Suite struct PipelineReadStateTests {
    typealias S = PipelineReadState

    @Test func behindItReadsOnThePoolCaughtUpOnItsLoop() {
        var s = S()
        #expect(
            s.nextRead(wantsRecords: true, bytesWanted: 10 << 20, budgetLeft: .max, holding: 0)
                == .onPool(maxBytes: S.poolReadBytes))
        s.read(count: 256, reachedEnd: false)
        let watchEarly = s.shouldWatchForData(wantsRecords: true)
        #expect(!watchEarly, "more to read: no wait")
        #expect(s.readOn(readRecords: true, wantsRecords: true))
        #expect(
            s.nextRead(wantsRecords: true, bytesWanted: 10 << 20, budgetLeft: .max, holding: 256)
                == .onPool(maxBytes: S.poolReadBytes))
        s.read(count: 3, reachedEnd: true)
        #expect(!s.readOn(readRecords: true, wantsRecords: true), "it read to the end: another read would be empty")
        #expect(s.nextRead(wantsRecords: true, bytesWanted: 10 << 20, budgetLeft: .max, holding: 259) == .none)
        let watch1 = s.shouldWatchForData(wantsRecords: true)
        #expect(watch1)
        let again = s.shouldWatchForData(wantsRecords: true)
        #expect(!again, "armed once per wait")
        s.newData()
        #expect(
            s.nextRead(wantsRecords: true, bytesWanted: 10 << 20, budgetLeft: .max, holding: 0)
                == .inline(maxBytes: S.inlineReadBytes),
            "told of fresh records while caught up: read on the loop, a small read")
    }

    @Test func anEmptyReadWaitsForData() {
        var s = S()
        _ = s.nextRead(wantsRecords: true, bytesWanted: 1 << 20, budgetLeft: .max, holding: 0)
        s.read(count: 0, reachedEnd: true)
        #expect(s.nextRead(wantsRecords: true, bytesWanted: 1 << 20, budgetLeft: .max, holding: 0) == .none)
        let watch2 = s.shouldWatchForData(wantsRecords: true)
        #expect(watch2)
        s.woke()
        let afterWake = s.nextRead(wantsRecords: true, bytesWanted: 1 << 20, budgetLeft: .max, holding: 0)
        #expect(afterWake != .none, "a wake-up looks again")
    }

    @Test func theSharedBudgetHoldsReadsBackButNeverStarvesAnEmptyPipeline() {
        var s = S()
        #expect(s.nextRead(wantsRecords: true, bytesWanted: 1 << 20, budgetLeft: 0, holding: 5) == .waitForBudget)
        #expect(
            s.nextRead(wantsRecords: true, bytesWanted: 1 << 20, budgetLeft: 0, holding: 5) == .none, "registered once")
        #expect(
            s.nextRead(wantsRecords: true, bytesWanted: 1 << 20, budgetLeft: 0, holding: 0) == .onPool(maxBytes: 1),
            "holding nothing: its next record, whatever the budget")
        #expect(
            s.nextRead(wantsRecords: true, bytesWanted: 1 << 20, budgetLeft: 1000, holding: 5)
                == .onPool(maxBytes: 1000))
        #expect(
            s.nextRead(wantsRecords: false, bytesWanted: 0, budgetLeft: .max, holding: 5) == .none,
            "no room in the sink")
    }

    @Test func anIdlePipelineLeavesAtItsTimeoutOrWhenOthersWait() {
        var s = S()
        _ = s.nextRead(wantsRecords: true, bytesWanted: 1 << 20, budgetLeft: .max, holding: 0)
        #expect(
            s.idle(machineIdle: true, now: 1000, idleTimeoutMillis: 300_000, othersWaiting: false) == .busy,
            "not drained yet")
        s.read(count: 1, reachedEnd: true)
        #expect(
            s.idle(machineIdle: false, now: 1000, idleTimeoutMillis: 300_000, othersWaiting: false) == .busy,
            "in flight")
        #expect(
            s.idle(machineIdle: true, now: 2000, idleTimeoutMillis: 300_000, othersWaiting: false)
                == .idle(deadline: 302_000, mayLeave: false))
        #expect(
            s.idle(machineIdle: true, now: 9000, idleTimeoutMillis: 300_000, othersWaiting: false)
                == .idle(deadline: 302_000, mayLeave: false),
            "idle since the first look, not since the last")
        #expect(
            s.idle(machineIdle: true, now: 9000, idleTimeoutMillis: 300_000, othersWaiting: true)
                == .idle(deadline: 302_000, mayLeave: true))
        #expect(
            s.idle(machineIdle: true, now: 302_000, idleTimeoutMillis: 300_000, othersWaiting: false)
                == .idle(deadline: 302_000, mayLeave: true))
        s.newData()
        s.read(count: 2, reachedEnd: true)
        #expect(
            s.idle(machineIdle: true, now: 400_000, idleTimeoutMillis: 300_000, othersWaiting: false)
                == .idle(deadline: 700_000, mayLeave: false),
            "records read: idle again from now")
    }
}
