import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import SinkdDelivery

/// The pipeline's task executor (EventLoopExecutor): jobs run on its loop, each once, in the order
/// they were enqueued, whether they come from the loop itself or from other threads, and a job
/// still queued when the last owner lets the executor go runs all the same.
struct EventLoopExecutorTests {
    @Test func tasksRunOnTheLoopInTheOrderTheyWereEnqueued() async {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let executor = EventLoopExecutor(loop: loop)
        let order = NIOLockedValueBox<[Int]>([])
        // Enqueued from this (non-loop) thread one after the other: each task's first job is
        // queued before the next task is created.
        let tasks = (0..<200).map { i in
            Task.detached(executorPreference: executor) {
                #expect(loop.inEventLoop)
                order.withLockedValue { $0.append(i) }
            }
        }
        for t in tasks { await t.value }
        #expect(order.withLockedValue { $0 } == Array(0..<200))
    }

    @Test func jobsFromTheLoopAndFromManyThreadsAllRunOnce() async {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let executor = EventLoopExecutor(loop: loop)
        let ran = NIOLockedValueBox<[Int: Int]>([:])
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<1000 {
                // Half from the global pool's threads, half spawned from a job on the loop.
                group.addTask(executorPreference: i.isMultiple(of: 2) ? nil : executor) {
                    await withTaskGroup(of: Void.self) { inner in
                        inner.addTask(executorPreference: executor) {
                            #expect(loop.inEventLoop)
                            await Task.yield()  // enqueued again, from the loop itself
                            #expect(loop.inEventLoop)
                            ran.withLockedValue { $0[i, default: 0] += 1 }
                        }
                    }
                }
            }
        }
        let counts = ran.withLockedValue { $0 }
        #expect(counts.count == 1000)
        #expect(counts.values.allSatisfy { $0 == 1 })
    }

    @Test func aJobQueuedWhenTheLastOwnerLetsGoStillRuns() async {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let done = EventQueue<Int>()
        for i in 0..<100 {
            // The loop is held busy so that the job waits in the queue while the executor's
            // creator drops it and the task's handle is dropped too: the task (which owns its
            // executor) and the scheduled drain are all that keep it. Here the runtime let the
            // executor go after the drain, so this checks that the jobs run; the executor's
            // keep-alive and its debug assertion cover a task let go inside the drain.
            let held = loop.submit {
                let until = NIODeadline.now() + .milliseconds(2)
                while NIODeadline.now() < until {}
            }
            do {
                let executor = EventLoopExecutor(loop: loop)
                Task.detached(executorPreference: executor) { done.yield(i) }
            }
            _ = try? await held.get()
        }
        var got = Set<Int>()
        for _ in 0..<100 { if let i = await done.next() { got.insert(i) } }
        #expect(got == Set(0..<100))
    }
}
