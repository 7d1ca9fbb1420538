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

    /** sinkd stopped: publish fails at once (Conductor retries the task); sinkd back: it succeeds. */
    @Test
    void aStoppedSinkdFailsThePublishAndARestartedOneTakesItAgain() throws Exception {
        try (SinkdProcess sinkd = new SinkdProcess(); SinkdClient client = new SinkdClient(sinkd.socket, 2, Duration.ofSeconds(2))) {
            assertEquals("accepted", client.publish("t-1", "file", "events", "{}", SinkdClient.Context.NONE).status());
            sinkd.stop();
            long start = System.nanoTime();
            SinkdException down = assertThrows(SinkdException.class, () -> client.publish("t-2", "file", "events", "{}", SinkdClient.Context.NONE));
            assertTrue(down.retryable());
            assertEquals("unavailable", down.code(), down.getMessage());
            assertTrue(System.nanoTime() - start < Duration.ofSeconds(3).toNanos(), "within the publish timeout");
            sinkd.start();
            assertEquals("accepted", client.publish("t-2", "file", "events", "{}", SinkdClient.Context.NONE).status());
            assertEquals("accepted", client.publish("t-3", "file", "events", "{}", SinkdClient.Context.NONE).status(), "every connection of the pool recovers");
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
     * A listener that accepts and never answers (sinkd hung): publish throws "timeout" once its
     * timeout passed, each time (the connection is given up and made again).
     */
    @Test
    void aPublishNobodyAnswersTimesOut() throws Exception {
        java.nio.file.Path dir = java.nio.file.Files.createTempDirectory("sinkd-plugin-hung-");
        java.nio.file.Path path = dir.resolve("ingest.sock");
        try (var server = java.nio.channels.ServerSocketChannel.open(java.net.StandardProtocolFamily.UNIX);
             SinkdClient client = new SinkdClient(path, 1, Duration.ofMillis(300))) {
            server.bind(java.net.UnixDomainSocketAddress.of(path));
            List<java.nio.channels.SocketChannel> accepted = new ArrayList<>();
            Thread acceptor = new Thread(() -> {
                try {
                    while (true) {
                        accepted.add(server.accept());
                    }
                } catch (java.io.IOException closed) {
                    // the test is over
                }
            });
            acceptor.setDaemon(true);
            acceptor.start();
            for (int i = 0; i < 2; i++) {
                long start = System.nanoTime();
                SinkdException e = assertThrows(SinkdException.class, () -> client.publish("t-1", "file", "events", "{}", SinkdClient.Context.NONE));
                long millis = (System.nanoTime() - start) / 1_000_000;
                assertEquals("timeout", e.code(), e.getMessage());
                assertTrue(e.retryable());
                assertTrue(millis >= 300, "waited the timeout, " + millis + " ms");
            }
        }
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
