import NIOCore

/// A task executor that runs jobs on one NIO event loop: a pipeline's task, its sends and the
/// continuations its connection resumes stay on that loop's thread, instead of hopping to the
/// global concurrency pool and back at every await (each hop a futex wake and a context switch
/// per record at Conductor's pace; issue 30). A job enqueued from the loop's own thread needs no
/// wake-up at all.
public final class EventLoopExecutor: TaskExecutor, @unchecked Sendable {
    public let loop: any EventLoop

    public init(loop: any EventLoop) {
        self.loop = loop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { [self] in
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}
