import NIOConcurrencyHelpers

/// The order of one pipeline's sends: send n starts once send n - 1 is queued on its connection,
/// so batches in flight at once still reach a one-connection broker in WAL order. The decisions,
/// I/O-free and tested with plain values; `SendOrder` keeps them under a lock for the sends'
/// tasks.
///
/// Invariants: tickets are handed out 1, 2, 3, ...; `queuedThrough` only grows, and a ticket
/// marked queued means every earlier one was (ticket n starts only after n - 1 was queued); a
/// waiter is resumed exactly once, by the mark that lets it start.
struct SendOrderState<Waiter> {
    private(set) var issued: UInt64 = 0
    private(set) var queuedThrough: UInt64 = 0
    private var waiters: [(ticket: UInt64, waiter: Waiter)] = []

    /// The next send's ticket.
    mutating func issue() -> UInt64 {
        issued += 1
        return issued
    }

    /// Whether the send holding `ticket` may start: the one before it is queued.
    func mayStart(_ ticket: UInt64) -> Bool { ticket <= queuedThrough + 1 }

    /// The send holding `ticket` waits; false (and not kept) if it may start already.
    mutating func wait(_ ticket: UInt64, _ waiter: Waiter) -> Bool {
        guard !mayStart(ticket) else { return false }
        waiters.append((ticket, waiter))
        return true
    }

    /// The send holding `ticket` is queued (or failed before it could be; a second mark does
    /// nothing): the waiters that may start now, to resume.
    mutating func queued(_ ticket: UInt64) -> [Waiter] {
        guard ticket > queuedThrough else { return [] }
        queuedThrough = ticket
        guard !waiters.isEmpty else { return [] }
        let through = queuedThrough
        var ready: [Waiter] = []
        waiters.removeAll { w in
            guard w.ticket <= through + 1 else { return false }
            ready.append(w.waiter)
            return true
        }
        return ready
    }

    var waiting: Int { waiters.count }
}

/// `SendOrderState` for the sends' tasks. One per pipeline run: a send that need not wait (at
/// Conductor's pace, every one) costs a lock and no heap call, where a signal object per send
/// cost three.
final class SendOrder: Sendable {
    private let state = NIOLockedValueBox(SendOrderState<CheckedContinuation<Void, Never>>())

    func issue() -> UInt64 { state.withLockedValue { $0.issue() } }

    func wait(for ticket: UInt64) async {
        if state.withLockedValue({ $0.mayStart(ticket) }) { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            if !state.withLockedValue({ $0.wait(ticket, c) }) { c.resume() }
        }
    }

    func queued(_ ticket: UInt64) {
        for waiter in state.withLockedValue({ $0.queued(ticket) }) { waiter.resume() }
    }
}

extension SendOrderState: Sendable where Waiter: Sendable {}
