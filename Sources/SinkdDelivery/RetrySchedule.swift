import SinkdCore

/// Exponential backoff with full jitter (the delay before attempt n+1 is uniform in
/// [0, min(max_backoff, initial_backoff × multiplier^(n-1))]), and when to give up.
public struct RetrySchedule: Sendable {
    public let policy: RetryPolicy

    public init(_ policy: RetryPolicy) {
        self.policy = policy
    }

    /// The ceiling of the delay after `attempts` failed attempts (attempts ≥ 1).
    public func ceiling(afterAttempts attempts: Int) -> Duration {
        let initial = Double(policy.initialBackoff.milliseconds)
        let cap = Double(policy.maxBackoff.milliseconds)
        let exponent = Double(max(0, attempts - 1))
        let raw = initial * pow(policy.multiplier, exponent)
        return .milliseconds(Int64(min(cap, raw.isFinite ? raw : cap)))
    }

    /// The delay after `attempts` failed attempts; `unit` is a uniform random number in [0, 1).
    /// A broker's Retry-After is honoured when it asks for longer.
    public func delay(afterAttempts attempts: Int, unit: Double, retryAfter: Duration? = nil) -> Duration {
        let jittered = Duration.milliseconds(Int64(Double(ceiling(afterAttempts: attempts).milliseconds) * unit))
        if let retryAfter, retryAfter > jittered { return min(retryAfter, policy.maxBackoff * 10) }
        return jittered
    }

    /// Whether a record that failed `attempts` times, first tried at `firstAttemptMillis`, has
    /// used up its retries at `nowMillis`.
    public func isExhausted(attempts: Int, firstAttemptMillis: UInt64, nowMillis: UInt64) -> Bool {
        if policy.maxAttempts > 0, attempts >= policy.maxAttempts { return true }
        if policy.maxAge > .zero, nowMillis >= firstAttemptMillis,
            nowMillis - firstAttemptMillis >= UInt64(policy.maxAge.milliseconds)
        {
            return true
        }
        return false
    }
}

/// base^exponent for the backoff: stops once past any cap (1e15 ms), and at once for a base of
/// 1 or less (`multiplier: 1.0` is allowed: a constant backoff), so the work never grows with
/// the number of attempts.
private func pow(_ base: Double, _ exponent: Double) -> Double {
    guard base > 1 else { return 1 }
    var result = 1.0
    var i = 0.0
    while i < exponent {
        result *= base
        if result > 1e15 { return result }
        i += 1
    }
    return result
}
