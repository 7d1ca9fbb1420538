package io.sinkd.conductor;

import java.time.Duration;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Which of Conductor's queue types publish through sinkd: a fixed set
 * ({@code conductor.sinkd.queue-types}), or, by default, the types sinkd's running configuration
 * serves ({@code {"query":"queueTypes"}}), asked by a background thread of its own: at start, every
 * {@code maxAge} after an answer (so a {@code systemctl reload sinkd} that adds or removes a family
 * is followed), every second while sinkd does not answer. No publisher ever waits on the query
 * itself: it reads the last answer; only before the very first answer does it wait, at most until
 * its own deadline, and then hears {@link Answer#UNKNOWN}. A failed refresh keeps the last answer.
 */
public final class ServedQueueTypes implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(ServedQueueTypes.class);
    static final Duration RETRY_AFTER_FAILURE = Duration.ofSeconds(1);

    public enum Answer { SERVED, NOT_SERVED, UNKNOWN }

    private final Set<String> fixed;
    private final Supplier<Set<String>> ask;
    private final Duration maxAge;
    private final CountDownLatch firstAnswer = new CountDownLatch(1);
    private final Thread refresher;
    private volatile Set<String> known;
    private volatile boolean closed;

    private ServedQueueTypes(Set<String> fixed, Supplier<Set<String>> ask, Duration maxAge) {
        this.fixed = fixed;
        this.ask = ask;
        this.maxAge = maxAge;
        if (fixed != null) {
            known = fixed;
            firstAnswer.countDown();
            refresher = null;
        } else {
            refresher = new Thread(this::refresh, "sinkd-queue-types");
            refresher.setDaemon(true);
        }
    }

    /** Exactly {@code types}, never asking sinkd. */
    public static ServedQueueTypes fixed(Set<String> types) {
        return new ServedQueueTypes(Set.copyOf(types), null, Duration.ZERO);
    }

    /** What sinkd answers, asked again once the answer is {@code maxAge} old. Starts asking at once. */
    public static ServedQueueTypes askingSinkd(SinkdClient client, Duration maxAge) {
        return asking(client::queueTypes, maxAge);
    }

    static ServedQueueTypes asking(Supplier<Set<String>> ask, Duration maxAge) {
        ServedQueueTypes served = new ServedQueueTypes(null, ask, maxAge);
        served.refresher.start();
        return served;
    }

    /** Whether the set is sinkd's answer rather than the property. */
    public boolean askingSinkd() {
        return fixed == null;
    }

    /** The last answer (or the fixed set); null before sinkd first answered. */
    public Set<String> current() {
        return known;
    }

    /**
     * Whether {@code type} goes through sinkd now. Before sinkd's first answer this waits for it,
     * at most until {@code deadlineNanos} ({@link System#nanoTime()} based), then says
     * {@link Answer#UNKNOWN}.
     */
    public Answer serves(String type, long deadlineNanos) {
        Set<String> types = known;
        if (types == null) {
            try {
                firstAnswer.await(Math.max(0, deadlineNanos - System.nanoTime()), TimeUnit.NANOSECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            types = known;
            if (types == null) {
                return Answer.UNKNOWN;
            }
        }
        return types.contains(type) ? Answer.SERVED : Answer.NOT_SERVED;
    }

    private void refresh() {
        boolean failing = false;
        while (!closed) {
            Duration wait;
            try {
                Set<String> answer = Set.copyOf(ask.get());
                Set<String> before = known;
                known = answer;
                firstAnswer.countDown();
                if (!answer.equals(before)) {
                    LOG.info("sinkd serves the queue types {}: EVENT tasks of these types publish through sinkd, the others through Conductor's own queues",
                            new TreeSet<>(answer));
                }
                failing = false;
                wait = maxAge;
            } catch (RuntimeException e) {
                if (!failing) {
                    LOG.warn("cannot ask sinkd which queue types it serves ({}); {}; asking again every second", e.getMessage(),
                            known == null ? "until it answers, EVENT tasks wait up to their deadline for it" : "keeping its last answer " + new TreeSet<>(known));
                }
                failing = true;
                wait = RETRY_AFTER_FAILURE;
            }
            try {
                Thread.sleep(wait.toMillis());
            } catch (InterruptedException e) {
                return;
            }
        }
    }

    @Override
    public void close() {
        closed = true;
        if (refresher != null) {
            refresher.interrupt();
        }
    }
}
