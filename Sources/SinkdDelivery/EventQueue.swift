import NIOConcurrencyHelpers
import NIOCore

/// Events for one consumer task from any thread: what a pipeline waits on (new records, send
/// completions, timers, a nudge, stop). AsyncStream did this job and cost heap calls per event
/// at Conductor's pace (its storage is generic code the compiler cannot specialize for the
/// pipeline's events: each buffer read allocated); this queue is specialized where it is used,
/// keeps its events in a ring buffer and resumes its one waiter directly.
///
/// `next()` returns nil once the consumer's task is cancelled and nothing is buffered, as an
/// AsyncStream's iterator does (from then on, whenever the queue is empty). One consumer at a
/// time: a second concurrent `next()` is a programming error (AsyncStream traps on it as well).
final class EventQueue<Element: Sendable>: Sendable {
    private struct State {
        var buffer = CircularBuffer<Element>(initialCapacity: 8)
        var waiter: UnsafeContinuation<Element?, Never>?
        var cancelled = false
    }
    private let state = NIOLockedValueBox(State())

    func yield(_ element: Element) {
        let waiter = state.withLockedValue { s -> UnsafeContinuation<Element?, Never>? in
            if let waiter = s.waiter {
                s.waiter = nil
                return waiter
            }
            s.buffer.append(element)
            return nil
        }
        waiter?.resume(returning: element)
    }

    func next() async -> Element? {
        if let element = state.withLockedValue({ $0.buffer.popFirst() }) { return element }
        return await withTaskCancellationHandler {
            await withUnsafeContinuation { (c: UnsafeContinuation<Element?, Never>) in
                let now = state.withLockedValue { s -> Element?? in
                    if let element = s.buffer.popFirst() { return .some(element) }
                    if s.cancelled { return .some(nil) }
                    precondition(s.waiter == nil, "EventQueue has one consumer")
                    s.waiter = c
                    return .none
                }
                if let now { c.resume(returning: now) }
            }
        } onCancel: {
            let waiter = state.withLockedValue { s -> UnsafeContinuation<Element?, Never>? in
                s.cancelled = true
                defer { s.waiter = nil }
                return s.waiter
            }
            waiter?.resume(returning: nil)
        }
    }
}
