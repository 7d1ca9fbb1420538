package io.sinkd.conductor;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.junit.jupiter.api.Test;

/** The client against a real sinkd process (a file sink), through the protocol's every answer. */
class SinkdClientTest {
    @Test
    void acceptedRecordsArriveWithThePayloadByteForByte() throws Exception {
        try (SinkdProcess sinkd = new SinkdProcess(); SinkdClient client = new SinkdClient(sinkd.socket, 2, Duration.ofSeconds(5))) {
            String payload = "{\"orderId\": 42,  \"note\":\"caf\u00e9 \\\"quoted\\\"\", \"n\":1.50}";
            SinkdClient.Result result = client.publish("t-1", "file", "events", payload, SinkdClient.Context.NONE);
            assertEquals("accepted", result.status());
            assertTrue(result.seq() > 0);
            assertEquals(List.of(payload), sinkd.delivered("events", 1), "raw JSON, never re-serialized");
        }
    }

    @Test
    void theSameTaskIdTwiceIsADuplicateAndNotSentAgain() throws Exception {
        try (SinkdProcess sinkd = new SinkdProcess(); SinkdClient client = new SinkdClient(sinkd.socket, 1, Duration.ofSeconds(5))) {
            SinkdClient.Result first = client.publish("t-1", "file", "events", "{\"n\":1}", SinkdClient.Context.NONE);
            SinkdClient.Result again = client.publish("t-1", "file", "events", "{\"n\":1}", SinkdClient.Context.NONE);
            assertTrue(again.duplicate());
            assertEquals(first.seq(), again.seq());
            client.publish("t-2", "file", "events", "{\"n\":2}", SinkdClient.Context.NONE);
            // t-2 was written after the duplicate: once it is there, a second t-1 would be too.
            assertEquals(List.of("{\"n\":1}", "{\"n\":2}"), sinkd.delivered("events", 2));
        }
    }

    @Test
    void aRejectionCarriesSinkdsCode() throws Exception {
        try (SinkdProcess sinkd = new SinkdProcess(); SinkdClient client = new SinkdClient(sinkd.socket, 1, Duration.ofSeconds(5))) {
            SinkdException e = assertThrows(SinkdException.class, () -> client.publish("t-1", "sqss", "orders", "{}", SinkdClient.Context.NONE));
            assertEquals("invalid_sink", e.code());
            assertFalse(e.retryable());
            assertTrue(e.getMessage().contains("unknown sink prefix 'sqss'"), e.getMessage());
            SinkdException unconfigured = assertThrows(SinkdException.class, () -> client.publish("t-2", "sqs", "orders", "{}", SinkdClient.Context.NONE));
            assertEquals("unknown_sink", unconfigured.code());
            // The connection stays usable after a rejection.
            assertEquals("accepted", client.publish("t-3", "file", "events", "{}", SinkdClient.Context.NONE).status());
        }
    }

    /**
     * sinkd stopped: a publish tries again until its deadline, then fails saying what it tried;
     * sinkd started while a publish is retrying: that publish succeeds.
     */
    @Test
    void aStoppedSinkdIsTriedUntilTheDeadlineAndARestartedOneTakesThePublish() throws Exception {
        try (SinkdProcess sinkd = new SinkdProcess(); SinkdClient client = new SinkdClient(sinkd.socket, 2, Duration.ofSeconds(1))) {
            assertEquals("accepted", client.publish("t-1", "file", "events", "{}", SinkdClient.Context.NONE).status());
            sinkd.stop();
            long start = System.nanoTime();
            SinkdException down = assertThrows(SinkdException.class, () -> client.publish("t-2", "file", "events", "{}", SinkdClient.Context.NONE));
            long ms = (System.nanoTime() - start) / 1_000_000;
            assertTrue(down.retryable());
            assertEquals("unavailable", down.code(), down.getMessage());
            assertTrue(ms >= 500 && ms < 2000, "retried until about the deadline, " + ms + " ms");
            assertTrue(down.getMessage().contains("attempts"), down.getMessage());
            try (SinkdClient patient = new SinkdClient(sinkd.socket, 2, Duration.ofSeconds(5))) {
                Thread starter = new Thread(() -> {
                    try {
                        Thread.sleep(300);
                        sinkd.start();
                    } catch (Exception e) {
                        throw new IllegalStateException(e);
                    }
                });
                starter.start();
                assertEquals("accepted", patient.publish("t-2", "file", "events", "{}", SinkdClient.Context.NONE).status(), "taken once sinkd is back");
                starter.join();
            }
            assertEquals("accepted", client.publish("t-3", "file", "events", "{}", SinkdClient.Context.NONE).status(), "every connection of the pool recovers");
            assertEquals("accepted", client.publish("t-4", "file", "events", "{}", SinkdClient.Context.NONE).status());
        }
    }

    /** 64 decider threads at once over 4 connections: every message accepted exactly once. */
    @Test
    void manyThreadsPublishEveryMessageOnce() throws Exception {
        try (SinkdProcess sinkd = new SinkdProcess(); SinkdClient client = new SinkdClient(sinkd.socket, 4, Duration.ofSeconds(10))) {
            ExecutorService pool = Executors.newFixedThreadPool(64);
            ConcurrentLinkedQueue<String> statuses = new ConcurrentLinkedQueue<>();
            List<Future<?>> done = new ArrayList<>();
            for (int t = 0; t < 64; t++) {
                int thread = t;
                done.add(pool.submit(() -> {
                    for (int i = 0; i < 50; i++) {
                        String id = "t" + thread + "-" + i;
                        statuses.add(client.publish(id, "file", "load", "{\"id\":\"" + id + "\"}", SinkdClient.Context.NONE).status());
                    }
                    return null;
                }));
            }
            for (Future<?> f : done) {
                f.get();
            }
            pool.shutdown();
            assertEquals(3200, statuses.size());
            assertTrue(statuses.stream().allMatch("accepted"::equals));
            List<String> lines = sinkd.delivered("load", 3200);
            assertEquals(3200, lines.size());
            assertEquals(3200, new HashSet<>(lines).size(), "no message twice");
        }
    }

    /**
     * A listener that accepts and never answers (sinkd hung): each publish throws "timeout" once
     * its deadline passed, not before, and not much later.
     */
    @Test
    void aPublishNobodyAnswersTimesOut() throws Exception {
        try (FakeSinkd fake = FakeSinkd.acceptingNeverReading(); SinkdClient client = new SinkdClient(fake.socket, 1, Duration.ofMillis(300))) {
            for (int i = 0; i < 2; i++) {
                long millis = timed(() -> client.publish("t-1", "file", "events", "{}", SinkdClient.Context.NONE), "timeout");
                assertTrue(millis >= 250 && millis < 1300, "within the deadline + 1 s, " + millis + " ms");
            }
        }
    }

    /**
     * A sinkd that stops reading (a full WAL under when_full: block) while a 4 MB publish is
     * written: the publish still returns within its deadline + 1 s (the caller never waits on the
     * socket), and once a real sinkd is at the socket, publishes on the same client succeed.
     */
    @Test
    void aListenerThatNeverReadsCannotHoldAPublishPastItsDeadline() throws Exception {
        try (SinkdProcess sinkd = new SinkdProcess(); SinkdClient client = new SinkdClient(sinkd.socket, 2, Duration.ofSeconds(1))) {
            sinkd.stop();
            String big = "\"" + "x".repeat(4 << 20) + "\"";
            try (FakeSinkd fake = FakeSinkd.acceptingNeverReading(sinkd.socket)) {
                for (int i = 0; i < 3; i++) {
                    long millis = timed(() -> client.publish("big", "file", "events", big, SinkdClient.Context.NONE), null);
                    assertTrue(millis < 2000, "within the deadline + 1 s, " + millis + " ms");
                }
                assertTrue(fake.connections() >= 1, "the publishes reached the listener");
            }
            java.nio.file.Files.deleteIfExists(sinkd.socket);
            sinkd.start();
            for (int i = 0; i < 4; i++) {
                assertEquals("accepted", client.publish("after-" + i, "file", "events", "{}", SinkdClient.Context.NONE).status());
            }
        }
    }

    /** A listener that never accepts (its backlog full): publishes are bounded by their deadline too. */
    @Test
    void aListenerThatNeverAcceptsCannotHoldAPublishPastItsDeadline() throws Exception {
        try (FakeSinkd fake = FakeSinkd.neverAccepting(); SinkdClient client = new SinkdClient(fake.socket, 4, Duration.ofMillis(500))) {
            for (int i = 0; i < 6; i++) {
                String id = "t-" + i;
                long millis = timed(() -> client.publish(id, "file", "events", "{}", SinkdClient.Context.NONE), null);
                assertTrue(millis < 1500, "within the deadline + 1 s, " + millis + " ms");
            }
        }
    }

    /**
     * A SIGSTOPped sinkd: 8 threads' publishes each return within the deadline + 1 s; after
     * SIGCONT the same client's publishes succeed.
     */
    @Test
    void aFrozenSinkdCannotHoldPublishesAndAThawedOneTakesThemAgain() throws Exception {
        try (SinkdProcess sinkd = new SinkdProcess(); SinkdClient client = new SinkdClient(sinkd.socket, 4, Duration.ofSeconds(1))) {
            assertEquals("accepted", client.publish("warm", "file", "events", "{}", SinkdClient.Context.NONE).status());
            sinkd.freeze(true);
            try {
                ExecutorService pool = Executors.newFixedThreadPool(8);
                List<Future<Long>> times = new ArrayList<>();
                for (int t = 0; t < 8; t++) {
                    String id = "frozen-" + t;
                    times.add(pool.submit(() -> timed(() -> client.publish(id, "file", "events", "{}", SinkdClient.Context.NONE), null)));
                }
                for (Future<Long> f : times) {
                    long millis = f.get();
                    assertTrue(millis < 2000, "within the deadline + 1 s, " + millis + " ms");
                }
                pool.shutdown();
            } finally {
                sinkd.freeze(false);
            }
            for (int i = 0; i < 8; i++) {
                assertEquals("accepted", client.publish("thawed-" + i, "file", "events", "{}", SinkdClient.Context.NONE).status());
            }
        }
    }

    /**
     * One slow answer does not fail the requests behind it on the same connection: the publish
     * whose deadline passed leaves, the one after it (same connection, its own longer deadline)
     * gets its answer.
     */
    @Test
    void aTimedOutPublishDoesNotFailTheOthersOnItsConnection() throws Exception {
        try (FakeSinkd fake = FakeSinkd.answeringSlowly("slow", 1500); SinkdClient client = new SinkdClient(fake.socket, 1, Duration.ofSeconds(5))) {
            ExecutorService pool = Executors.newFixedThreadPool(2);
            Future<Long> slow = pool.submit(() -> timed(() -> client.publish("slow", "file", "e", "{}", SinkdClient.Context.NONE,
                    System.nanoTime() + Duration.ofMillis(500).toNanos()), "timeout"));
            Thread.sleep(100);
            Future<SinkdClient.Result> fast = pool.submit(() -> client.publish("fast", "file", "e", "{}", SinkdClient.Context.NONE));
            assertTrue(slow.get() < 1500, "the slow one left at its deadline");
            assertEquals("accepted", fast.get().status(), "the one behind it was answered on the same connection");
            assertEquals(1, fake.connections(), "one connection throughout");
            pool.shutdown();
        }
    }

    /** Runs {@code publish}, which must throw (with {@code code} unless null); returns how long it took. */
    private static long timed(org.junit.jupiter.api.function.Executable publish, String code) {
        long start = System.nanoTime();
        SinkdException e = assertThrows(SinkdException.class, publish);
        if (code != null) {
            assertEquals(code, e.code(), e.getMessage());
        }
        assertTrue(e.retryable(), e.getMessage());
        return (System.nanoTime() - start) / 1_000_000;
    }

    @Test
    void responsesAreReadStrictly() {
        assertEquals(new SinkdClient.Result("accepted", 42), SinkdClient.interpret("t", "{\"id\":\"t\",\"status\":\"accepted\",\"seq\":42}"));
        SinkdException e = assertThrows(SinkdException.class, () -> SinkdClient.interpret("t",
                "{\"id\":\"t\",\"status\":\"rejected\",\"code\":\"wal_full\",\"retryable\":true,\"error\":\"the WAL is full \\u0041\"}"));
        assertEquals("wal_full", e.code());
        assertTrue(e.retryable());
        assertTrue(e.getMessage().endsWith("the WAL is full A"), e.getMessage());
        for (String broken : Set.of("", "{", "[1]", "{\"status\":}", "{\"status\":\"accepted\"", "{\"status\":\"weird\"}")) {
            SinkdException b = assertThrows(SinkdException.class, () -> SinkdClient.interpret("t", broken), broken);
            assertTrue(b.retryable());
        }
    }

    @Test
    void queueTypesAreWhatTheRunningSinkdServes() throws Exception {
        try (SinkdProcess sinkd = new SinkdProcess("  kafka: {bootstrap_servers: [\"127.0.0.1:1\"]}");
             SinkdClient client = new SinkdClient(sinkd.socket, 2, Duration.ofSeconds(5))) {
            assertEquals(Set.of("kafka"), client.queueTypes(), "file is sinkd's own family, not a Conductor queue type");
            assertEquals(Set.of(), SinkdClient.interpretQueueTypes("{\"id\":null,\"status\":\"answer\",\"query\":\"queueTypes\",\"queueTypes\":[]}"));
            SinkdException old = assertThrows(SinkdException.class, () -> SinkdClient.interpretQueueTypes(
                    "{\"id\":null,\"status\":\"rejected\",\"code\":\"missing_field\",\"retryable\":false,\"error\":\"missing field 'id'\"}"));
            assertTrue(old.getMessage().contains("conductor.sinkd.queue-types"), old.getMessage());
        }
    }
}
