import NIOConcurrencyHelpers

/// Payload bytes of records held in memory by all pipelines together (`delivery.max_held_bytes`).
/// A pipeline reads more only while bytes are left (or when it holds nothing: every sink can
/// always take its next record, so none starves); one that must wait is called back when others
/// release bytes. So records held ≤ max_held_bytes + max_sinks × max_record_bytes, and per sink
/// ≤ max_held_bytes_per_sink + one record (docs/SERVICE.md, Resource bounds).
public final class HeldBytesBudget: Sendable {
    private let state: NIOLockedValueBox<(held: Int, limit: Int, waiters: [@Sendable () -> Void])>

    public init(limit: Int) {
        state = NIOLockedValueBox((0, limit, []))
    }

    public var limit: Int { state.withLockedValue { $0.limit } }

    /// A reload changed `delivery.max_held_bytes`.
    public func setLimit(_ limit: Int) {
        let woken: [@Sendable () -> Void] = state.withLockedValue { s in
            s.limit = limit
            guard s.held < limit else { return [] }
            defer { s.waiters.removeAll() }
            return s.waiters
        }
        for w in woken { w() }
    }

    public var held: Int { state.withLockedValue { $0.held } }

    /// Bytes that may be read now (0: wait).
    public var available: Int { state.withLockedValue { max(0, $0.limit - $0.held) } }

    /// A pipeline's holding changed by `delta` bytes; releasing wakes the waiting pipelines.
    public func adjust(by delta: Int) {
        guard delta != 0 else { return }
        let woken: [@Sendable () -> Void] = state.withLockedValue { s in
            s.held += delta
            guard delta < 0, s.held < s.limit, !s.waiters.isEmpty else { return [] }
            defer { s.waiters.removeAll() }
            return s.waiters
        }
        for w in woken { w() }
    }

    /// Calls `callback` once bytes are available (at once if they are).
    public func whenAvailable(_ callback: @escaping @Sendable () -> Void) {
        let now = state.withLockedValue { s -> Bool in
            if s.held < s.limit { return true }
            s.waiters.append(callback)
            return false
        }
        if now { callback() }
    }
}
