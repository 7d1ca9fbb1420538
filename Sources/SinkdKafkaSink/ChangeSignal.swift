import NIOConcurrencyHelpers
import NIOCore

/// A version number and the tasks waiting for it to change, usable across suspension points.
final class ChangeSignal: Sendable {
    private struct State {
        var version: UInt64 = 0
        var nextWaiter: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    }
    private let state = NIOLockedValueBox(State())

    var version: UInt64 { state.withLockedValue { $0.version } }

    func bump() {
        let waiting = state.withLockedValue { s -> [CheckedContinuation<Void, Never>] in
            s.version &+= 1
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for w in waiting { w.resume() }
    }

    /// Returns once the version is not `seen` any more, or at `deadline`.
    func wait(since seen: UInt64, until deadline: ContinuousClock.Instant, on loop: EventLoop) async {
        let timer = NIOLockedValueBox<Scheduled<Void>?>(nil)
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let id = state.withLockedValue { s -> UInt64? in
                guard s.version == seen else { return nil }
                s.nextWaiter &+= 1
                s.waiters[s.nextWaiter] = c
                return s.nextWaiter
            }
            guard let id else { return c.resume() }
            let scheduled = loop.scheduleTask(in: TimeAmount(max(.zero, ContinuousClock.now.duration(to: deadline)))) {
                [state] in
                let waiter = state.withLockedValue { $0.waiters.removeValue(forKey: id) }
                waiter?.resume()
            }
            timer.withLockedValue { $0 = scheduled }
        }
        // Woken by a change: the deadline's task is not needed any more.
        timer.withLockedValue { $0?.cancel() }
    }
}
