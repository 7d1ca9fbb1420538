package io.sinkd.conductor;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.netflix.conductor.core.events.EventQueueProvider;
import com.netflix.conductor.core.events.queue.Message;
import com.netflix.conductor.core.events.queue.ObservableQueue;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;
import rx.Observable;

/**
 * The Conductor side: the provider wrapper and its queues. Conductor's classes cannot be installed
 * here, so the wrapped queue is a recording one written against the stand-ins (the only mock in
 * these tests, said so): it proves what the wrapper passes on and what it keeps for sinkd.
 */
class SinkdPublishingQueueTest {
    static final class RecordingQueue implements ObservableQueue {
        final List<String> calls = new ArrayList<>();
        final Observable<Message> observable = new Observable<>() {};

        public Observable<Message> observe() { calls.add("observe"); return observable; }
        public String getType() { return "conductor"; }
        public String getName() { return "order_flow:notify_ref"; }
        public String getURI() { return "order_flow:notify_ref"; }
        public List<String> ack(List<Message> messages) { calls.add("ack " + messages.size()); return List.of("x"); }
        public void nack(List<Message> messages) { calls.add("nack " + messages.size()); }
        public void publish(List<Message> messages) { calls.add("publish " + messages.size()); }
        public boolean rePublishIfNoAck() { calls.add("rePublishIfNoAck"); return true; }
        public void setUnackTimeout(Message message, long unackTimeout) { calls.add("setUnackTimeout " + unackTimeout); }
        public long size() { calls.add("size"); return 7; }
        public void close() { calls.add("close"); }
        public void start() { calls.add("start"); }
        public void stop() { calls.add("stop"); }
        public boolean isRunning() { calls.add("isRunning"); return true; }
    }

    static final class Provider implements EventQueueProvider {
        final String type;
        final List<String> asked = new ArrayList<>();
        final RecordingQueue queue = new RecordingQueue();

        Provider(String type) { this.type = type; }

        public String getQueueType() { return type; }

        public ObservableQueue getQueue(String queueURI) {
            asked.add(queueURI);
            return queue;
        }
    }

    @Test
    void everythingButPublishIsTheWrappedQueues() {
        Provider provider = new Provider("conductor");
        try (SinkdClient client = new SinkdClient(Path.of("/nonexistent/ingest.sock"), 1, Duration.ofSeconds(1))) {
            ObservableQueue queue = new SinkdEventQueueProvider(provider, client).getQueue("order_flow:notify_ref");
            Message m = new Message("t-1", "{}", "t-1");
            assertSame(provider.queue.observable, queue.observe());
            assertEquals(List.of("x"), queue.ack(List.of(m)));
            queue.nack(List.of(m, m));
            assertTrue(queue.rePublishIfNoAck());
            queue.setUnackTimeout(m, 5000);
            assertEquals(7, queue.size());
            queue.start();
            assertTrue(queue.isRunning());
            queue.stop();
            queue.close();
            assertEquals("order_flow:notify_ref", queue.getURI());
            assertEquals(List.of("observe", "ack 1", "nack 2", "rePublishIfNoAck", "setUnackTimeout 5000", "size", "start", "isRunning", "stop", "close"),
                    provider.queue.calls);
            // publish goes to sinkd (absent here: the task fails, to be retried), never to the wrapped queue.
            SinkdException e = assertThrows(SinkdException.class, () -> queue.publish(List.of(m)));
            assertEquals("unavailable", e.code());
            assertTrue(provider.queue.calls.stream().noneMatch(c -> c.startsWith("publish")));
            // A consumed message put back by the event processor (a broker's receipt, not the id)
            // is Conductor's queue's business, as before.
            queue.publish(List.of(new Message("sqs-message-1", "{}", "AQEB-receipt-handle")));
            assertEquals("publish 1", provider.queue.calls.get(provider.queue.calls.size() - 1));
        }
    }

    @Test
    void publishGoesThroughSinkdInTheExpandedForm() throws Exception {
        Provider provider = new Provider("file");
        try (SinkdProcess sinkd = new SinkdProcess(); SinkdClient client = new SinkdClient(sinkd.socket, 1, Duration.ofSeconds(5))) {
            ObservableQueue queue = new SinkdEventQueueProvider(provider, client).getQueue("events");
            queue.publish(List.of(new Message("t-1", "{\"a\":1}", "t-1"), new Message("t-2", "{\"a\":2}", "t-2")));
            assertEquals(List.of("{\"a\":1}", "{\"a\":2}"), sinkd.delivered("events", 2));
            assertEquals(List.of("events"), provider.asked, "the provider made its own queue for the URI");
        }
    }

    /**
     * A `conductor` sink in the expanded form, as a plugin inside Conductor has it: the provider's
     * type and the already-expanded URI. The row lands in Conductor's own queue table, under the
     * queue the EVENT task named, with the taskId as message id and the payload as sent.
     */
    @Test
    void aConductorSinksRowArrivesThroughTheExpandedForm() throws Exception {
        try (PostgresServer postgres = new PostgresServer();
             SinkdProcess sinkd = new SinkdProcess("  conductor: {postgres: {url: \"" + postgres.url() + "\", sslmode: disable}}");
             SinkdClient client = new SinkdClient(sinkd.socket, 1, Duration.ofSeconds(5))) {
            Provider provider = new Provider("conductor");
            ObservableQueue queue = new SinkdEventQueueProvider(provider, client).getQueue("order_flow:notify_ref");
            queue.publish(List.of(new Message("task-7", "{\"orderId\": 7}", "task-7")));
            String row = "";
            long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
            while (row.isEmpty() && System.nanoTime() < deadline) {
                row = postgres.psql("conductor", "SELECT queue_name, message_id, payload FROM queue_message");
                if (row.isEmpty()) {
                    Thread.sleep(50);
                }
            }
            assertEquals("order_flow:notify_ref|task-7|{\"orderId\": 7}", row);
        }
    }

    @Test
    void onlyTheConfiguredQueueTypesAreWrapped() {
        try (SinkdClient client = new SinkdClient(Path.of("/nonexistent/ingest.sock"), 1, Duration.ofSeconds(1))) {
            SinkdBeanPostProcessor processor = new SinkdBeanPostProcessor(Set.of("sqs", "conductor"), client);
            Provider sqs = new Provider("sqs");
            Provider nats = new Provider("nats");
            Object wrapped = processor.postProcessAfterInitialization(sqs, "sqsEventQueueProvider");
            assertTrue(wrapped instanceof SinkdEventQueueProvider);
            assertSame(sqs, ((SinkdEventQueueProvider) wrapped).delegate());
            assertSame(wrapped, processor.postProcessAfterInitialization(wrapped, "again"), "never wrapped twice");
            assertSame(nats, processor.postProcessAfterInitialization(nats, "natsEventQueueProvider"));
            Object other = new Object();
            assertSame(other, processor.postProcessAfterInitialization(other, "somethingElse"));
        }
    }

    /**
     * The default (no conductor.sinkd.queue-types): every provider is wrapped, and at publish the
     * types sinkd's running configuration serves go through sinkd; the others stay Conductor's.
     */
    @Test
    void byDefaultOnlyTheTypesSinkdServesGoThroughIt() throws Exception {
        try (SinkdProcess sinkd = new SinkdProcess("  conductor: {postgres: {url: \"postgres://sinkd@127.0.0.1:1/conductor\", sslmode: disable}}");
             SinkdClient client = new SinkdClient(sinkd.socket, 1, Duration.ofSeconds(5))) {
            ServedQueueTypes served = SinkdAutoConfiguration.servedQueueTypes(null, client);
            assertTrue(served.decidedAtPublish());
            SinkdBeanPostProcessor processor = new SinkdBeanPostProcessor(served, client);
            Provider conductor = new Provider("conductor");
            Provider sqs = new Provider("sqs");
            EventQueueProvider wrappedConductor = (EventQueueProvider) processor.postProcessAfterInitialization(conductor, "conductorProvider");
            EventQueueProvider wrappedSqs = (EventQueueProvider) processor.postProcessAfterInitialization(sqs, "sqsProvider");
            assertTrue(wrappedSqs instanceof SinkdEventQueueProvider, "wrapped: sinkd decides at publish");
            wrappedConductor.getQueue("order_flow:notify_ref").publish(List.of(new Message("t-9", "{}", "t-9")));
            wrappedSqs.getQueue("orders").publish(List.of(new Message("t-10", "{}", "t-10")));
            assertTrue(conductor.queue.calls.stream().noneMatch(c -> c.startsWith("publish")), "conductor is served by sinkd");
            assertEquals(List.of("publish 1"), sqs.queue.calls, "sqs is not configured in sinkd: Conductor's own queue publishes it");
            // It went to sinkd: the same taskId again is sinkd's duplicate.
            assertTrue(client.publish("t-9", "conductor", "order_flow:notify_ref", "{}", SinkdClient.Context.NONE).duplicate());
            // An explicit list is exactly that list, sinkd not asked.
            ServedQueueTypes fixed = SinkdAutoConfiguration.servedQueueTypes(" sqs , kafka ", client);
            assertTrue(fixed.serves("sqs") && fixed.serves("kafka") && !fixed.serves("conductor") && !fixed.decidedAtPublish());
        }
    }

    @Test
    void sinkdsAnswerIsKeptForItsAgeAndAFailedRefreshKeepsTheLastOne() {
        long[] now = {0};
        List<Object> answers = new ArrayList<>(List.of(new SinkdException("unavailable", true, "sinkd is down"),
                Set.of("sqs"), Set.of("sqs", "kafka"), new SinkdException("unavailable", true, "sinkd restarting")));
        int[] asked = {0};
        ServedQueueTypes served = ServedQueueTypes.asking(() -> {
            asked[0]++;
            Object next = answers.remove(0);
            if (next instanceof SinkdException e) {
                throw e;
            }
            @SuppressWarnings("unchecked") Set<String> types = (Set<String>) next;
            return types;
        }, Duration.ofSeconds(30), () -> now[0]);
        // Never answered: the publish fails (Conductor retries the task).
        assertEquals("unavailable", assertThrows(SinkdException.class, () -> served.serves("sqs")).code());
        assertTrue(served.serves("sqs") && !served.serves("kafka"), "asked again: sinkd answered");
        assertEquals(2, asked[0]);
        now[0] += Duration.ofSeconds(29).toNanos();
        assertTrue(!served.serves("kafka"), "within 30 s: the same answer, sinkd not asked");
        assertEquals(2, asked[0]);
        now[0] += Duration.ofSeconds(2).toNanos();
        assertTrue(served.serves("kafka"), "older than 30 s: asked again (a reload added kafka)");
        now[0] += Duration.ofSeconds(31).toNanos();
        assertTrue(served.serves("kafka"), "the refresh failed: the last answer stands");
        assertEquals(4, asked[0]);
        assertTrue(served.serves("kafka"));
        assertEquals(4, asked[0], "not asked again within a second of a failure");
    }
}
