package io.sinkd.conductor;

import java.time.Duration;
import java.util.Set;
import java.util.function.LongSupplier;
import java.util.function.Supplier;

/**
 * Which of Conductor's queue types publish through sinkd: a fixed set
 * ({@code conductor.sinkd.queue-types}), or, by default, the types sinkd's running configuration
 * serves, asked of sinkd ({@code {"query":"queueTypes"}}) at the first publish and again once the
 * answer is older than {@code maxAge} (so a sinkd reload that adds or removes a family is followed).
 * A type sinkd does not serve keeps publishing through Conductor's own queue, as without the plugin.
 */
public final class ServedQueueTypes {
    private final Set<String> fixed;
    private final Supplier<Set<String>> ask;
    private final long maxAgeNanos;
    private final LongSupplier clock;
    private Set<String> known;
    private long knownAt;
    private long failedAt;
    private boolean failedOnce;

    private ServedQueueTypes(Set<String> fixed, Supplier<Set<String>> ask, Duration maxAge, LongSupplier clock) {
        this.fixed = fixed;
        this.ask = ask;
        this.maxAgeNanos = maxAge.toNanos();
        this.clock = clock;
    }

    /** Exactly {@code types}, never asking sinkd. */
    public static ServedQueueTypes fixed(Set<String> types) {
        return new ServedQueueTypes(Set.copyOf(types), null, Duration.ZERO, System::nanoTime);
    }

    /** What sinkd answers, asked again once the answer is older than {@code maxAge}. */
    public static ServedQueueTypes askingSinkd(SinkdClient client, Duration maxAge) {
        return asking(client::queueTypes, maxAge, System::nanoTime);
    }

    static ServedQueueTypes asking(Supplier<Set<String>> ask, Duration maxAge, LongSupplier clock) {
        return new ServedQueueTypes(null, ask, maxAge, clock);
    }

    /** Whether every provider must be wrapped (its type's fate is known only when sinkd answers). */
    public boolean decidedAtPublish() {
        return fixed == null;
    }

    /** Whether a provider of {@code type} is wrapped at start-up. */
    public boolean mayServe(String type) {
        return fixed == null || fixed.contains(type);
    }

    /**
     * Whether {@code type} goes through sinkd now. Asking sinkd fails only while it never
     * answered (sinkd down since Conductor started): that throws {@link SinkdException}, which
     * fails the EVENT task so that Conductor retries it. After one answer, a failed refresh keeps
     * the last answer (asking again at most once a second).
     */
    public boolean serves(String type) {
        if (fixed != null) {
            return fixed.contains(type);
        }
        Set<String> current;
        synchronized (this) {
            long now = clock.getAsLong();
            boolean fresh = known != null && now - knownAt < maxAgeNanos;
            boolean backingOff = failedOnce && now - failedAt < 1_000_000_000L;
            if (fresh || (known != null && backingOff)) {
                return known.contains(type);
            }
            try {
                known = Set.copyOf(ask.get());
                knownAt = now;
                failedOnce = false;
            } catch (SinkdException e) {
                failedOnce = true;
                failedAt = now;
                if (known == null) {
                    throw e;
                }
            }
            current = known;
        }
        return current.contains(type);
    }
}
