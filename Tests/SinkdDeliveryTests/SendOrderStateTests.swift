import Testing

@testable import SinkdDelivery

/// The order of a pipeline's sends (SendOrderState), with plain values: send n starts once send
/// n - 1 is queued, whatever order the marks and waits come in.
struct SendOrderStateTests {
    @Test func theFirstSendAndOneAfterAQueuedSendStartAtOnce() {
        var order = SendOrderState<String>()
        let first = order.issue()
        #expect(first == 1)
        #expect(order.mayStart(first))
        let kept = order.wait(first, "first")
        #expect(!kept, "a send that may start is not kept waiting")
        let second = order.issue()
        #expect(!order.mayStart(second), "the first is not queued yet")
        let resumed = order.queued(first)
        #expect(resumed.isEmpty)
        #expect(order.mayStart(second))
        #expect(order.waiting == 0)
    }

    @Test func waitersResumeInTurnAsTheSendsBeforeThemAreQueued() {
        var order = SendOrderState<String>()
        let tickets = (0..<4).map { _ in order.issue() }
        var kept = [order.wait(tickets[0], "a")]
        kept.append(order.wait(tickets[2], "c"))
        kept.append(order.wait(tickets[1], "b"))
        kept.append(order.wait(tickets[3], "d"))
        #expect(kept == [false, true, true, true])
        var resumed: [[String]] = []
        for ticket in tickets { resumed.append(order.queued(ticket)) }
        #expect(resumed == [["b"], ["c"], ["d"], []], "each mark lets only the next send start")
        #expect(order.waiting == 0)
    }

    @Test func aSecondMarkOfTheSameSendDoesNothing() {
        // A send marks itself when its bytes are queued and again when it ends (or fails before
        // queueing): the second mark must neither resume a waiter twice nor move the order back.
        var order = SendOrderState<String>()
        let first = order.issue()
        let second = order.issue()
        let third = order.issue()
        let kept = order.wait(third, "third")
        #expect(kept)
        var resumed = [order.queued(first)]
        resumed.append(order.queued(second))
        resumed.append(order.queued(second))
        resumed.append(order.queued(first))
        #expect(resumed == [[], ["third"], [], []], "resumed once; an older mark does not move the order back")
        #expect(order.queuedThrough == second)
    }
}
