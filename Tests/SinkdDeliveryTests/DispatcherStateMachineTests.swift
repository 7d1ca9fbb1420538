import Testing
@testable import SinkdDelivery

/// The dispatcher's decisions with plain values: which sinks get a pipeline, wait, are parked,
/// start again; and the order of the WAL reads that two races taught (issue 31: these replace
/// the test probes DeliveryService carried).
@Suite struct DispatcherStateMachineTests {
    typealias M = DispatcherStateMachine
    static let ready: @Sendable (String) -> M.SinkCheck = { _ in .ready }

    @Test func sinksStartOnceEachUpToTheLimitThenWaitInOrder() {
        var m = M()
        #expect(m.consider(["a", "b", "a"], limit: 2, check: Self.ready) == [.start("a"), .start("b")])
        #expect(
            m.consider(["c", "d", "c", "a"], limit: 2, check: Self.ready) == [.nudgeIdlePipelines],
            "the first sink to wait nudges idle pipelines; a waiting or live sink is not considered twice")
        #expect(m.waiting == ["c", "d"])
        #expect(m.sinksWaiting)
        // a leaves with nothing left: its series go, the first waiting sink starts.
        #expect(m.exited("a", recordsLeft: false, limit: 2, check: Self.ready) == [.retireMetrics("a"), .start("c")])
        #expect(m.exited("b", recordsLeft: false, limit: 2, check: Self.ready) == [.retireMetrics("b"), .start("d")])
        #expect(!m.sinksWaiting)
        #expect(m.live == ["c", "d"])
    }

    @Test func aPipelineThatLeavesWithRecordsLeftStartsAgainBeforeTheWaitingOnes() {
        var m = M()
        _ = m.consider(["a"], limit: 1, check: Self.ready)
        _ = m.consider(["w"], limit: 1, check: Self.ready)
        // A reload stopped a's pipeline with records outstanding: a new pipeline takes them over.
        #expect(m.exited("a", recordsLeft: true, limit: 1, check: Self.ready) == [.start("a")])
        #expect(m.waiting == ["w"], "still waiting: the slot went back to a")
        #expect(m.exited("a", recordsLeft: false, limit: 1, check: Self.ready) == [.retireMetrics("a"), .start("w")])
    }

    @Test func sinksNothingCanDeliverAreParkedAndSaidOnceUntilAReload() {
        var m = M()
        var configured = false
        let check: (String) -> M.SinkCheck = { sink in
            if sink == "bad" { return .unparseable }
            return sink.hasPrefix("kafka:") && !configured ? .unconfigured : .ready
        }
        #expect(
            m.consider(["bad", "kafka:t"], limit: 10, check: check) == [
                .parkedUnparseable("bad"), .parkedUnconfigured("kafka:t"),
            ])
        #expect(m.consider(["bad", "kafka:t"], limit: 10, check: check) == [], "said once")
        configured = true
        #expect(
            m.reloaded(inLog: ["bad", "kafka:t"], limit: 10, check: check) == [
                .parkedUnparseable("bad"), .start("kafka:t"),
            ])
    }

    @Test func aLowerLimitAfterAReloadFillsNoMoreSlots() {
        var m = M()
        _ = m.consider(["a", "b", "c"], limit: 3, check: Self.ready)
        #expect(m.consider(["d"], limit: 2, check: Self.ready) == [.nudgeIdlePipelines])
        #expect(
            m.exited("a", recordsLeft: false, limit: 2, check: Self.ready) == [.retireMetrics("a")],
            "3 → 2 live: d still waits")
        #expect(m.exited("b", recordsLeft: false, limit: 2, check: Self.ready) == [.retireMetrics("b"), .start("d")])
    }

    @Test func afterShutdownNothingStarts() {
        var m = M()
        _ = m.consider(["a"], limit: 1, check: Self.ready)
        _ = m.consider(["w"], limit: 1, check: Self.ready)
        #expect(m.shutdown() == [.stopAll])
        #expect(m.shutdown() == [], "once")
        #expect(
            m.exited("a", recordsLeft: true, limit: 1, check: Self.ready) == [],
            "a pipeline that left because of the stop is not started again")
        #expect(m.consider(["x"], limit: 1, check: Self.ready) == [])
        #expect(m.live.isEmpty)
    }

    /// CI, twice: records appended while the service started were never delivered. Startup listed
    /// the WAL's sinks, the append completed, then startup drained the new sinks and threw the
    /// fresh one away. Draining first, then listing, leaves a round completing in between in the
    /// list (its summary is updated before it counts as new), and one completing later in the
    /// new sinks the watch reads.
    @Test func startupDrainsTheNewSinksBeforeListingTheLog() {
        #expect(M.startupReads == [.drainNewSinks, .listLog])
    }

    /// The same race one step later: the watch read the new sinks (none without a pipeline), a
    /// round for a new sink completed, then it waited for data after the durable seq as it was
    /// now, past that round. Reading the seq first, a round completing in between is among the
    /// new sinks or past the seq, which returns at once.
    @Test func theWatchReadsTheDurableSeqBeforeTheNewSinks() {
        #expect(M.watchReads == [.durableSeq, .newSinks])
    }
}
