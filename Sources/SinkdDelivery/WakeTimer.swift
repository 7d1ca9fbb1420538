import NIOCore

/// A pipeline's one wake-up: at most one armed at a time, scheduled on an event loop.
///
/// Not a task per wake-up that sleeps: a cancelled `Task.sleep` returns at once, but its task and
/// the dispatch timer behind it stay allocated until the original deadline. A pipeline re-arms on
/// every event, mostly to the same `idle_timeout` deadline five minutes away, so the hour-long soak
/// (docs/RELIABILITY.md) saw about 300 bytes of RSS per record piling up. NIO's scheduled task is
/// removed from its loop when cancelled, and an unchanged deadline is not re-armed at all.
/// Owned by the pipeline's run loop; not shared.
struct WakeTimer {
    private let loop: any EventLoop
    private var armed: (deadline: UInt64, task: Scheduled<Void>)?
    /// Timers scheduled so far (tests count them).
    private(set) var scheduled = 0

    init(loop: any EventLoop) {
        self.loop = loop
    }

    /// The deadline (milliseconds, the pipeline's clock) of the armed wake-up.
    var deadline: UInt64? { armed?.deadline }

    /// Arms the wake-up for `deadline`, replacing an armed one that is later; `fire` runs on the
    /// loop then. Arming the deadline already armed, or a later one, does nothing: the armed
    /// wake-up comes first and the pipeline, looking again then, arms its next deadline. (A
    /// pipeline's idle deadline moves with every record: at Conductor's pace, replacing it each
    /// time cost a cancelled and a new scheduled task, five heap calls, per record.)
    mutating func arm(at deadline: UInt64, now: UInt64, _ fire: @escaping @Sendable () -> Void) {
        if let armed, armed.deadline <= deadline { return }
        armed?.task.cancel()
        let delay = deadline > now ? deadline - now : 0
        armed = (deadline, loop.scheduleTask(in: .milliseconds(Int64(clamping: delay)), fire))
        scheduled += 1
    }

    /// The wake-up armed for `deadline` fired: it is no longer armed, so arming that deadline
    /// again schedules a new one. A wake from a replaced timer (one that fired just before it was
    /// cancelled) names another deadline and leaves the armed one alone. Matched by deadline, not
    /// by comparing clocks: the pipeline's clock is the wall clock, which can step back.
    mutating func fired(_ deadline: UInt64) {
        if armed?.deadline == deadline { armed = nil }
    }

    mutating func cancel() {
        armed?.task.cancel()
        armed = nil
    }
}
