import Foundation
import Testing

@testable import SinkdDelivery

/// The pipeline's event queue (EventQueue): order, a waiting consumer woken from other threads,
/// every event once under concurrent producers, cancellation ending the wait as AsyncStream's
/// iterator does.
struct EventQueueTests {
    @Test func eventsComeOutInTheOrderTheyWentIn() async {
        let queue = EventQueue<Int>()
        for i in 0..<20 { queue.yield(i) }
        var got: [Int] = []
        for _ in 0..<20 { got.append(await queue.next() ?? -1) }
        #expect(got == Array(0..<20))
    }

    @Test func aWaitingConsumerIsWokenByAnotherThread() async {
        let queue = EventQueue<String>()
        let consumer = Task { await queue.next() }
        // Whether the consumer waits already or not, the event reaches it exactly once.
        Thread.detachNewThread { queue.yield("from a thread") }
        #expect(await consumer.value == "from a thread")
    }

    @Test func concurrentProducersLoseAndRepeatNothing() async {
        let queue = EventQueue<Int>()
        let producers = 4
        let each = 20_000
        for p in 0..<producers {
            Thread.detachNewThread {
                for i in 0..<each { queue.yield(p * each + i) }
            }
        }
        var seen = [Bool](repeating: false, count: producers * each)
        var lastByProducer = [Int](repeating: -1, count: producers)
        var inOrder = true
        for _ in 0..<(producers * each) {
            guard let n = await queue.next() else { break }
            seen[n] = true
            let p = n / each
            if n <= lastByProducer[p] { inOrder = false }
            lastByProducer[p] = n
        }
        #expect(seen.allSatisfy { $0 }, "every event arrived")
        #expect(inOrder, "each producer's events in the order it yielded them")
    }

    @Test func cancellingTheConsumerEndsItsWaitWithNil() async {
        let queue = EventQueue<Int>()
        let consumer = Task { await queue.next() }
        try? await Task.sleep(for: .milliseconds(50))  // most likely waiting by now; either way nil
        consumer.cancel()
        #expect(await consumer.value == nil)
        // Events yielded after it are kept for a consumer that asks again.
        queue.yield(7)
        #expect(await queue.next() == 7)
    }
}
