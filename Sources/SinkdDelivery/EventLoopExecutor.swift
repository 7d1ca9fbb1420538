import NIOConcurrencyHelpers
import NIOCore

/// A task executor that runs jobs on one NIO event loop: a pipeline's task, its sends and the
/// continuations its connection resumes stay on that loop's thread, instead of hopping to the
/// global concurrency pool and back at every await (each hop a futex wake and a context switch
/// per record at Conductor's pace; issue 30). A job enqueued from the loop's own thread needs no
/// wake-up at all.
///
/// Jobs wait in a queue of this executor's, drained on the loop by one closure made once: handing
/// the loop a closure per job (capturing the job) was a heap call per job, three or four per
/// record at Conductor's pace. While a drain is scheduled the executor keeps itself alive (the
/// closure holds it unowned, so that it does not keep itself forever).
public final class EventLoopExecutor: TaskExecutor, @unchecked Sendable {
    public let loop: any EventLoop

    private struct Queue {
        var jobs: [UnownedJob] = []
        /// A drain is scheduled on the loop and has not yet taken the jobs.
        var scheduled = false
        /// Self while a drain is scheduled.
        var keepAlive: EventLoopExecutor?
    }

    private let queue = NIOLockedValueBox(Queue())
    /// The array the last drain ran, kept for the next swap (only drains touch it, one at a
    /// time, on the loop).
    private var spare: [UnownedJob] = []
    private var drain: (@Sendable () -> Void)?
    /// A drain is running (checked in debug builds: the executor must outlive it).
    private var draining = false

    public init(loop: any EventLoop) {
        self.loop = loop
        drain = { [unowned(unsafe) self] in self.runQueued() }
    }

    deinit {
        assert(!draining, "an EventLoopExecutor was freed while its drain ran")
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let schedule = queue.withLockedValue { q in
            q.jobs.append(job)
            guard !q.scheduled else { return false }
            q.scheduled = true
            q.keepAlive = self
            return true
        }
        if schedule, let drain { loop.execute(drain) }
    }

    /// Runs the jobs queued so far, in order; jobs they enqueue schedule the next drain (the
    /// loop's other work runs in between).
    private func runQueued() {
        var jobs = spare
        spare = []
        let keep = queue.withLockedValue { q in
            swap(&jobs, &q.jobs)
            q.scheduled = false
            defer { q.keepAlive = nil }
            return q.keepAlive
        }
        let executor = asUnownedTaskExecutor()
        draining = true
        for job in jobs { job.runSynchronously(on: executor) }
        draining = false
        jobs.removeAll(keepingCapacity: true)
        spare = jobs
        withExtendedLifetime(keep) {}
    }
}
