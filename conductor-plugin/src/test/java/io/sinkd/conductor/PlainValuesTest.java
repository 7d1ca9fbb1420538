package io.sinkd.conductor;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.netflix.conductor.model.TaskModel;
import com.netflix.conductor.model.WorkflowModel;
import java.time.Duration;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Supplier;
import org.junit.jupiter.api.Test;

/** The plugin's decisions as plain values: retry pauses, the record id, context fields, the queue-type cache. */
class PlainValuesTest {
    @Test
    void retryPausesDoubleToTheirCeilingWithJitterInTheUpperHalf() {
        RetryPolicy p = RetryPolicy.DEFAULT;
        long ms = 1_000_000;
        assertEquals(12_500_000L, p.pauseNanos(1, 0.0));
        assertEquals(25 * ms, p.pauseNanos(1, 0.999_999_999), ms / 1000);
        assertEquals(50 * ms, p.pauseNanos(2, 0.999_999_999), ms / 1000);
        assertEquals(200 * ms, p.pauseNanos(4, 0.999_999_999), ms / 1000);
        assertEquals(500 * ms, p.pauseNanos(6, 0.999_999_999), ms / 1000);
        assertEquals(250 * ms, p.pauseNanos(1_000_000, 0.0), "capped, and no overflow after many attempts");
    }

    /** The id is the first attempt's taskId: stable across Conductor's retries (retriedTaskId chains). */
    @Test
    void theRecordIdFollowsTheRetryChainToTheFirstAttempt() {
        WorkflowModel w = Conductor.workflow("wf", "flow");
        TaskModel first = Conductor.eventTask(w, "t1", "ref", "sqs:q");
        assertEquals("t1", SinkdEventTask.dedupeKey(w, first), "a first attempt is its own taskId, Conductor's message id");
        TaskModel second = Conductor.eventTask(w, "t2", "ref", "sqs:q");
        second.setRetriedTaskId("t1");
        TaskModel third = Conductor.eventTask(w, "t3", "ref", "sqs:q");
        third.setRetriedTaskId("t2");
        assertEquals("t1", SinkdEventTask.dedupeKey(w, second));
        assertEquals("t1", SinkdEventTask.dedupeKey(w, third));
        TaskModel orphan = Conductor.eventTask(w, "t9", "ref", "sqs:q");
        orphan.setRetriedTaskId("t8");
        assertEquals("t8", SinkdEventTask.dedupeKey(w, orphan), "a chain leaving the task list ends at the last id it named");
        TaskModel loopA = Conductor.eventTask(w, "la", "ref", "sqs:q");
        TaskModel loopB = Conductor.eventTask(w, "lb", "ref", "sqs:q");
        loopA.setRetriedTaskId("lb");
        loopB.setRetriedTaskId("la");
        assertTrue(Set.of("la", "lb").contains(SinkdEventTask.dedupeKey(w, loopA)), "a cycle ends");
        TaskModel other = Conductor.eventTask(w, "t4", "ref__2", "sqs:q");
        assertEquals("t4", SinkdEventTask.dedupeKey(w, other), "another loop iteration is another message");
    }

    @Test
    void contextFieldsSinkdWouldRefuseAreLeftOut() {
        assertTrue(SinkdClient.usableContext("corr-1 é ✓"));
        assertFalse(SinkdClient.usableContext("a\nb"));
        assertFalse(SinkdClient.usableContext("a\u0085b"), "C1 controls");
        assertFalse(SinkdClient.usableContext("a\u007fb"), "DEL");
        assertTrue(SinkdClient.usableContext("x".repeat(4096)));
        assertFalse(SinkdClient.usableContext("x".repeat(4097)));
        assertFalse(SinkdClient.usableContext("é".repeat(2049)), "4098 bytes in UTF-8");
        String line = new String(SinkdClient.encode("t", "sqs", "q", "{}", new SinkdClient.Context("wf", "flow", "bad\tid", "ref")), java.nio.charset.StandardCharsets.UTF_8);
        assertEquals("{\"id\":\"t\",\"queueType\":\"sqs\",\"queueURI\":\"q\",\"workflowInstanceId\":\"wf\",\"workflowType\":\"flow\",\"taskRefName\":\"ref\",\"payload\":{}}\n", line);
    }

    /**
     * The queue types are asked in the background: a publisher never runs the query; before the
     * first answer it waits at most until its deadline; a failed refresh keeps the last answer.
     */
    @Test
    void queueTypesAreAskedInTheBackgroundAndAFailedRefreshKeepsTheLastAnswer() throws Exception {
        AtomicInteger asked = new AtomicInteger();
        Supplier<Set<String>> sinkd = () -> {
            int n = asked.incrementAndGet();
            if (n == 1) {
                throw new SinkdException("unavailable", true, "not yet");
            }
            if (n == 2) {
                return Set.of("sqs");
            }
            throw new SinkdException("unavailable", true, "gone again");
        };
        try (ServedQueueTypes served = ServedQueueTypes.asking(sinkd, Duration.ofMillis(50))) {
            long start = System.nanoTime();
            assertEquals(ServedQueueTypes.Answer.UNKNOWN, served.serves("sqs", System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(200)));
            long waited = (System.nanoTime() - start) / 1_000_000;
            assertTrue(waited >= 150 && waited < 900, "waited until its deadline for the first answer: " + waited + " ms");
            assertEquals(ServedQueueTypes.Answer.SERVED, served.serves("sqs", System.nanoTime() + TimeUnit.SECONDS.toNanos(5)), "answered after the 1 s retry");
            assertEquals(ServedQueueTypes.Answer.NOT_SERVED, served.serves("amqp_queue", System.nanoTime()));
            long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
            while (asked.get() < 4 && System.nanoTime() < until) {
                Thread.sleep(10);
            }
            assertTrue(asked.get() >= 4, "refreshed after its max age, and again after the refresh failed");
            assertEquals(Set.of("sqs"), served.current(), "a failed refresh keeps the last answer");
        }
        try (ServedQueueTypes fixed = ServedQueueTypes.fixed(Set.of("kafka"))) {
            assertEquals(ServedQueueTypes.Answer.SERVED, fixed.serves("kafka", System.nanoTime()));
            assertEquals(ServedQueueTypes.Answer.NOT_SERVED, fixed.serves("sqs", System.nanoTime()));
        }
    }
}
