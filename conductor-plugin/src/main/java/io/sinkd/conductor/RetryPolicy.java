package io.sinkd.conductor;

import java.time.Duration;

/**
 * How long a publish waits before trying sinkd again after a retryable outcome (no socket, a
 * refused or reset connection, {@code shutting_down}, {@code wal_full}, a timeout): exponential
 * backoff with jitter, as sinkd's own delivery retries. The pause before attempt {@code n} (n ≥ 1)
 * is drawn from [d/2, d] with d = min(initial × 2^(n-1), max), so that publishers that failed
 * together (a sinkd restart) do not come back in step. A plain value: no clock, no randomness of
 * its own.
 */
public record RetryPolicy(Duration initial, Duration max) {
    /** 25 ms, 50, 100, 200, 400, then 500 ms: a sinkd restart (well under a second) costs a few tries. */
    public static final RetryPolicy DEFAULT = new RetryPolicy(Duration.ofMillis(25), Duration.ofMillis(500));

    public RetryPolicy {
        if (initial.isNegative() || initial.isZero() || max.compareTo(initial) < 0) {
            throw new IllegalArgumentException("retry pauses need 0 < initial <= max, got " + initial + " and " + max);
        }
    }

    /** The pause before attempt {@code attempt} (1 = the first retry), {@code random} in [0, 1). */
    public long pauseNanos(int attempt, double random) {
        long ceiling = max.toNanos();
        long d = initial.toNanos();
        for (int i = 1; i < attempt && d < ceiling; i++) {
            d = Math.min(ceiling, d * 2);
        }
        d = Math.min(ceiling, d);
        return d / 2 + (long) (random * (d - d / 2));
    }
}
