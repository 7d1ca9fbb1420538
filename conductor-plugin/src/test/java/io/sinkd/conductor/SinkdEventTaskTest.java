package io.sinkd.conductor;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.netflix.conductor.core.events.queue.Message;
import com.netflix.conductor.model.TaskModel;
import com.netflix.conductor.model.WorkflowModel;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * The replaced EVENT task as Conductor's decider runs it (start, then execute), against a real
 * sinkd on a file sink; Conductor's side is its Event task and queue providers (Conductor.java).
 */
class SinkdEventTaskTest {
    private static final SinkdSettings DEFAULTS = SinkdSettings.from(key -> null);

    private static SinkdClient defaultClient(Path socket) {
        return new SinkdClient(socket, DEFAULTS.connections(), DEFAULTS.publishTimeout());
    }

    /**
     * sinkd stopped (SIGTERM) and started again while 64 decider threads run EVENT tasks, with the
     * default properties: no task fails, and every message is in sinkd's WAL once and at its
     * destination exactly once.
     */
    @Test
    void aSinkdRestartFailsNoTaskAndStoresEachMessageOnce() throws Exception {
        restartWhilePublishing(false);
    }

    /**
     * The same with SIGKILL: no task fails, each message is in the WAL once (a retry whose first
     * outcome was unknown is answered duplicate) and at its destination at least once (sinkd's
     * delivery is at-least-once across a crash).
     */
    @Test
    void aSinkdCrashFailsNoTaskAndStoresEachMessageOnceInTheWAL() throws Exception {
        restartWhilePublishing(true);
    }

    /**
     * The records go to a redis stream whose server is started only after the restart: until then
     * every record stays in the WAL, where each must be exactly once; then each must reach the
     * stream (exactly once after SIGTERM, at least once after SIGKILL).
     */
    private void restartWhilePublishing(boolean crash) throws Exception {
        Conductor conductor = new Conductor(Set.of(), Set.of());
        try (RedisServer redis = new RedisServer();
             SinkdProcess sinkd = new SinkdProcess("  redis: {url: \"redis://127.0.0.1:" + redis.port + "/0\", retry: {initial_backoff: 50ms, max_backoff: 500ms}}");
             SinkdClient client = defaultClient(sinkd.socket)) {
            SinkdEventTask task = conductor.withSinkd(client, ServedQueueTypes.fixed(Set.of("redis")));
            AtomicBoolean stop = new AtomicBoolean();
            ConcurrentLinkedQueue<String> failures = new ConcurrentLinkedQueue<>();
            ConcurrentLinkedQueue<String> ids = new ConcurrentLinkedQueue<>();
            ConcurrentLinkedQueue<String> workflows = new ConcurrentLinkedQueue<>();
            ExecutorService deciders = Executors.newFixedThreadPool(64);
            List<Future<?>> done = new ArrayList<>();
            for (int t = 0; t < 64; t++) {
                done.add(deciders.submit(() -> {
                    while (!stop.get()) {
                        Conductor.EventRun run = Conductor.newEvent("redis:restart");
                        run.runWith(task);
                        if (run.task().getStatus() != TaskModel.Status.COMPLETED) {
                            failures.add(run.task().getStatus() + ": " + run.task().getReasonForIncompletion());
                        }
                        ids.add(run.task().getTaskId());
                        workflows.add(run.workflow().getWorkflowId());
                    }
                    return null;
                }));
            }
            Thread.sleep(700);
            int before = ids.size();
            if (crash) {
                sinkd.kill();
            } else {
                sinkd.stop();
            }
            sinkd.start();
            Thread.sleep(700);
            stop.set(true);
            for (Future<?> f : done) {
                f.get(30, TimeUnit.SECONDS);
            }
            deciders.shutdown();
            assertEquals(0, failures.size(), failures.size() + " EVENT tasks failed, e.g. " + failures.stream().limit(3).toList());
            assertTrue(before > 64 && ids.size() > before + 64, "tasks ran before and after the restart: " + before + ", " + ids.size());
            Map<String, Integer> inWAL = count(sinkd.walRecords(), WAL_ID);
            for (String id : ids) {
                assertEquals(1, inWAL.getOrDefault(id, 0), "message " + id + " in the WAL exactly once");
            }
            assertEquals(ids.size(), inWAL.size(), "nothing else in the WAL");
            redis.start();
            // The payload carries no taskId; each task ran in a workflow of its own.
            Map<String, Integer> delivered = count(redis.stream("restart", ids.size()), WORKFLOW_ID);
            for (String workflow : workflows) {
                int copies = delivered.getOrDefault(workflow, 0);
                if (crash) {
                    assertTrue(copies >= 1, "the message of workflow " + workflow + " delivered at least once");
                } else {
                    assertEquals(1, copies, "the message of workflow " + workflow + " delivered exactly once");
                }
            }
            assertEquals(workflows.size(), delivered.size(), "nothing else delivered");
        }
    }

    private static final Pattern WAL_ID = Pattern.compile("^\\{\"seq\":\\d+,\"sink\":\"[^\"]*\",\"id\":\"([^\"]+)\"");
    private static final Pattern WORKFLOW_ID = Pattern.compile("\"workflowInstanceId\":\"([^\"]+)\"");

    /** How often each value of {@code pattern}'s group occurs in {@code lines}. */
    private static Map<String, Integer> count(List<String> lines, Pattern pattern) {
        Map<String, Integer> counts = new HashMap<>();
        for (String line : lines) {
            Matcher m = pattern.matcher(line);
            counts.merge(m.find() ? m.group(1) : "(none) " + line, 1, Integer::sum);
        }
        return counts;
    }

    /**
     * The message Conductor's Event would publish, through sinkd: the payload is the task output as
     * Conductor's ObjectMapper writes it, the id the taskId, the sink the task's, and the record
     * carries the workflow's context fields.
     */
    @Test
    void theRecordIsConductorsMessageWithItsContext() throws Exception {
        Conductor conductor = new Conductor(Set.of(), Set.of());
        try (SinkdProcess sinkd = new SinkdProcess(); SinkdClient client = defaultClient(sinkd.socket)) {
            Conductor.EventRun run = Conductor.newEvent("file:orders");
            run.runWith(conductor.withSinkd(client, ServedQueueTypes.fixed(Set.of("file"))));
            assertEquals(TaskModel.Status.COMPLETED, run.task().getStatus(), run.task().getReasonForIncompletion());
            String expected = conductor.objectMapper.writeValueAsString(run.task().getOutputData());
            assertEquals(List.of(expected), sinkd.delivered("orders", 1));
            assertTrue(expected.contains("\"event_produced\":\"file:orders\""), expected);
            String wal = sinkd.walRecords().get(0);
            WorkflowModel w = run.workflow();
            for (String field : List.of("\"sink\":\"file:orders\"", "\"id\":\"" + run.task().getTaskId() + "\"",
                    "\"workflowInstanceId\":\"" + w.getWorkflowId() + "\"", "\"workflowType\":\"order_flow\"",
                    "\"correlationId\":\"corr-" + w.getWorkflowId() + "\"", "\"taskRefName\":\"notify_ref\"")) {
                assertTrue(wal.contains(field), field + " in " + wal);
            }
        }
    }

    /** A context field sinkd would refuse (a control character) is left out; the task completes. */
    @Test
    void aCorrelationIdSinkdCannotCarryDoesNotFailTheTask() throws Exception {
        Conductor conductor = new Conductor(Set.of(), Set.of());
        try (SinkdProcess sinkd = new SinkdProcess(); SinkdClient client = defaultClient(sinkd.socket)) {
            Conductor.EventRun run = Conductor.newEvent("file:orders");
            run.workflow().setCorrelationId("line\nbreak");
            run.runWith(conductor.withSinkd(client, ServedQueueTypes.fixed(Set.of("file"))));
            assertEquals(TaskModel.Status.COMPLETED, run.task().getStatus(), run.task().getReasonForIncompletion());
            String wal = sinkd.walRecords().get(0);
            String fields = wal.substring(0, wal.indexOf(",\"payload\":"));
            assertFalse(fields.contains("correlationId"), fields);
            assertTrue(fields.contains("\"workflowInstanceId\""), fields);
        }
    }

    /**
     * An asyncComplete task stays IN_PROGRESS and Conductor runs it again with the same taskId;
     * Conductor's retry of a task is a new task naming the old one (retriedTaskId). Both are
     * answered duplicate by sinkd: one message at the destination.
     */
    @Test
    void conductorsRepeatsAndRetriesOfAStoredMessageAreDuplicates() throws Exception {
        Conductor conductor = new Conductor(Set.of(), Set.of());
        try (SinkdProcess sinkd = new SinkdProcess(); SinkdClient client = defaultClient(sinkd.socket)) {
            SinkdEventTask task = conductor.withSinkd(client, ServedQueueTypes.fixed(Set.of("file")));
            Conductor.EventRun run = Conductor.newEvent("file:once");
            run.task().getInputData().put("asyncComplete", true);
            run.runWith(task);
            assertEquals(TaskModel.Status.IN_PROGRESS, run.task().getStatus(), "asyncComplete keeps the task in progress, as Conductor's Event");
            assertFalse(task.execute(run.workflow(), run.task(), null), "a later decide publishes again");
            assertEquals(TaskModel.Status.IN_PROGRESS, run.task().getStatus());
            // Conductor's retry (DeciderService.retry): a new task with a new id naming the old one.
            run.task().setStatus(TaskModel.Status.FAILED);
            TaskModel retry = Conductor.eventTask(run.workflow(), "retry-of-" + run.task().getTaskId(), "notify_ref", "file:once");
            retry.setRetriedTaskId(run.task().getTaskId());
            TaskModel again = Conductor.eventTask(run.workflow(), "second-retry", "notify_ref", "file:once");
            again.setRetriedTaskId(retry.getTaskId());
            Conductor.run(task, run.workflow(), retry);
            Conductor.run(task, run.workflow(), again);
            assertEquals(TaskModel.Status.COMPLETED, again.getStatus(), again.getReasonForIncompletion());
            // A marker after them: once it is delivered, a second copy would be too.
            Conductor.newEvent("file:once").runWith(task);
            List<String> lines = sinkd.delivered("once", 2);
            assertEquals(2, lines.size(), String.join("\n", lines));
            assertEquals(2, sinkd.walRecords().size(), "the WAL holds the first message and the marker");
        }
    }

    /**
     * What Conductor does around the publish stays Conductor's: a type sinkd does not serve goes to
     * Conductor's own queue; a type sinkd serves never touches Conductor's queue objects, so a
     * provider that cannot reach its broker, or no provider at all, does not matter.
     */
    @Test
    void onlyTypesSinkdServesGoThroughItAndNoBrokerIsOnTheirPath() throws Exception {
        Conductor conductor = new Conductor(Set.of("sqs", "amqp_queue"), Set.of("sqs"));
        try (SinkdProcess sinkd = new SinkdProcess(); SinkdClient client = defaultClient(sinkd.socket)) {
            SinkdEventTask task = conductor.withSinkd(client, ServedQueueTypes.fixed(Set.of("file", "sqs")));
            Conductor.EventRun amqp = Conductor.newEvent("amqp_queue:billing");
            amqp.runWith(task);
            assertEquals(TaskModel.Status.COMPLETED, amqp.task().getStatus(), amqp.task().getReasonForIncompletion());
            List<Message> own = conductor.published("amqp_queue", "billing");
            assertEquals(1, own.size());
            assertEquals(amqp.task().getTaskId(), own.get(0).getId(), "Conductor's own message, as without the plugin");

            Conductor.EventRun file = Conductor.newEvent("file:direct");
            file.runWith(task);
            assertEquals(TaskModel.Status.COMPLETED, file.task().getStatus(), "no Conductor provider of type file: " + file.task().getReasonForIncompletion());
            assertEquals(1, sinkd.delivered("direct", 1).size());

            // sqs: Conductor's provider throws (its broker is down); sinkd serves sqs but has no
            // sqs section here, so it refuses unknown_sink: the refusal proves the record reached
            // sinkd without Conductor's queue being asked for.
            Conductor.EventRun sqs = Conductor.newEvent("sqs:orders");
            sqs.runWith(task);
            assertEquals(TaskModel.Status.FAILED, sqs.task().getStatus());
            assertTrue(sqs.task().getReasonForIncompletion().contains("unknown_sink"), sqs.task().getReasonForIncompletion());
        }
    }

    /** A broker that is down when its queue is first used does not fail an EVENT task sinkd takes. */
    @Test
    void aBrokerThatIsDownDoesNotFailTheTask() throws Exception {
        Conductor conductor = new Conductor(Set.of("file"), Set.of("file"));
        try (SinkdProcess sinkd = new SinkdProcess(); SinkdClient client = defaultClient(sinkd.socket)) {
            Conductor.EventRun run = Conductor.newEvent("file:outage");
            // Without the plugin, Conductor's own task fails it:
            Conductor.EventRun without = Conductor.newEvent("file:outage");
            without.runWith(conductor.event);
            assertEquals(TaskModel.Status.FAILED, without.task().getStatus());
            run.runWith(conductor.withSinkd(client, ServedQueueTypes.fixed(Set.of("file"))));
            assertEquals(TaskModel.Status.COMPLETED, run.task().getStatus(), run.task().getReasonForIncompletion());
            assertEquals(1, sinkd.delivered("outage", 1).size());
        }
    }

    /** A refusal that cannot change fails the task at once, with sinkd's code and reason. */
    @Test
    void aNonRetryableRefusalFailsTheTaskAtOnceWithTheReason() throws Exception {
        Conductor conductor = new Conductor(Set.of(), Set.of());
        try (SinkdProcess sinkd = new SinkdProcess(); SinkdClient client = defaultClient(sinkd.socket)) {
            Conductor.EventRun run = Conductor.newEvent("file:");
            long start = System.nanoTime();
            run.runWith(conductor.withSinkd(client, ServedQueueTypes.fixed(Set.of("file"))));
            long ms = (System.nanoTime() - start) / 1_000_000;
            assertEquals(TaskModel.Status.FAILED, run.task().getStatus());
            String reason = run.task().getReasonForIncompletion();
            assertTrue(reason.contains("invalid_sink") || reason.contains("invalid_field"), reason);
            assertTrue(ms < 2000, "not retried: " + ms + " ms");
        }
    }

    /** No sinkd at all: the task fails once the deadline passed, with a reason that says what to check. */
    @Test
    void noSinkdFailsTheTaskAfterTheDeadlineSayingWhatToCheck() throws Exception {
        Conductor conductor = new Conductor(Set.of(), Set.of());
        Path nowhere = Path.of("/tmp/sinkd-plugin-no-such-dir/ingest.sock");
        try (SinkdClient client = new SinkdClient(nowhere, 2, Duration.ofSeconds(1))) {
            Conductor.EventRun run = Conductor.newEvent("file:x");
            long start = System.nanoTime();
            run.runWith(conductor.withSinkd(client, ServedQueueTypes.fixed(Set.of("file"))));
            long ms = (System.nanoTime() - start) / 1_000_000;
            assertEquals(TaskModel.Status.FAILED, run.task().getStatus());
            String reason = run.task().getReasonForIncompletion();
            assertTrue(ms >= 500 && ms < 2000, "tried until about the deadline: " + ms + " ms");
            assertTrue(reason.contains(nowhere.toString()) && reason.contains("systemctl status sinkd") && reason.contains("attempts"), reason);
        }
    }

    /**
     * Asked of sinkd (queue-types unset) while sinkd never answered: a type Conductor has a queue
     * for publishes through it, as without the plugin, once the deadline passed; a type Conductor
     * has no queue for fails, saying so. Once sinkd answers, its types go through it.
     */
    @Test
    void beforeSinkdFirstAnswersATaskFallsBackToConductorsOwnQueueOrFails() throws Exception {
        Conductor conductor = new Conductor(Set.of("nats"), Set.of());
        try (SinkdProcess sinkd = new SinkdProcess("  nats: {servers: [\"nats://127.0.0.1:1\"]}", false);
             SinkdClient client = new SinkdClient(sinkd.socket, 2, Duration.ofSeconds(1));
             ServedQueueTypes served = ServedQueueTypes.askingSinkd(client, Duration.ofSeconds(30))) {
            SinkdEventTask task = conductor.withSinkd(client, served);
            Conductor.EventRun nats = Conductor.newEvent("nats:alerts");
            nats.runWith(task);
            assertEquals(TaskModel.Status.COMPLETED, nats.task().getStatus(), nats.task().getReasonForIncompletion());
            assertEquals(1, conductor.published("nats", "alerts").size(), "through Conductor's own nats queue");
            Conductor.EventRun jsm = Conductor.newEvent("jsm:audit");
            jsm.runWith(task);
            assertEquals(TaskModel.Status.FAILED, jsm.task().getStatus());
            assertTrue(jsm.task().getReasonForIncompletion().contains("has not answered since Conductor started"), jsm.task().getReasonForIncompletion());

            sinkd.start();
            Conductor.EventRun later = Conductor.newEvent("nats:alerts");
            later.runWith(task);
            // sinkd serves nats now; its server is unreachable, which is sinkd's business: accepted.
            assertEquals(TaskModel.Status.COMPLETED, later.task().getStatus(), later.task().getReasonForIncompletion());
            assertEquals(1, conductor.published("nats", "alerts").size(), "not through Conductor's queue again");
            assertTrue(sinkd.walRecords().get(0).contains("\"sink\":\"nats:alerts\""));
        }
    }

    /**
     * Cancel: Conductor's own (it acks on Conductor's queue) where Conductor has the type's queue;
     * nothing for a type only sinkd publishes.
     */
    @Test
    void cancelIsConductorsWhereConductorHasTheQueue() throws Exception {
        Conductor conductor = new Conductor(Set.of("amqp_queue"), Set.of());
        try (SinkdClient client = new SinkdClient(Path.of("/nonexistent/ingest.sock"), 1, Duration.ofSeconds(1))) {
            SinkdEventTask task = conductor.withSinkd(client, ServedQueueTypes.fixed(Set.of("amqp_queue", "sqs")));
            Conductor.EventRun amqp = Conductor.newEvent("amqp_queue:billing");
            task.start(amqp.workflow(), amqp.task(), null);
            task.cancel(amqp.workflow(), amqp.task(), null);
            assertEquals(List.of(amqp.task().getTaskId()), conductor.providers.get("amqp_queue").getQueue("billing") instanceof Conductor.RecordingQueue q ? q.acked : List.of());
            Conductor.EventRun sqs = Conductor.newEvent("sqs:orders");
            task.start(sqs.workflow(), sqs.task(), null);
            task.cancel(sqs.workflow(), sqs.task(), null); // Conductor's would throw: no sqs provider
        }
    }

    /** The context fields reach the broker: an SQS FIFO queue (moto) groups by the workflow id. */
    @Test
    void theWorkflowIdIsTheFifoGroupOfAnSqsMessage() throws Exception {
        try (MotoServer moto = new MotoServer();
             SinkdProcess sinkd = new SinkdProcess("  sqs: {endpoint: \"" + moto.endpoint() + "\", region: us-east-1, access_key_id: test, "
                     + "secret_access_key: test, create_missing_queues: true}");
             SinkdClient client = defaultClient(sinkd.socket)) {
            Conductor conductor = new Conductor(Set.of(), Set.of());
            Conductor.EventRun run = Conductor.newEvent("sqs:audit.fifo");
            run.runWith(conductor.withSinkd(client, ServedQueueTypes.fixed(Set.of("sqs"))));
            assertEquals(TaskModel.Status.COMPLETED, run.task().getStatus(), run.task().getReasonForIncompletion());
            List<String> received = moto.receive("audit.fifo", 1);
            assertEquals(1, received.size(), String.join("\n", received));
            assertTrue(received.get(0).startsWith(run.workflow().getWorkflowId() + " "), "MessageGroupId = workflowInstanceId: " + received.get(0));
            assertTrue(received.get(0).contains("\"event_produced\":\"sqs:audit.fifo\""), received.get(0));
        }
    }

    /**
     * A `conductor` sink: Conductor's Event expands it to the workflow and task reference, and the
     * row lands in Conductor's own queue table (a private PostgreSQL) under that queue, with the
     * taskId as message id and the payload as Conductor serializes it.
     */
    @Test
    void aConductorSinksRowArrivesInConductorsQueueTable() throws Exception {
        try (PostgresServer postgres = new PostgresServer();
             SinkdProcess sinkd = new SinkdProcess("  conductor: {postgres: {url: \"" + postgres.url() + "\", sslmode: disable}}");
             SinkdClient client = defaultClient(sinkd.socket)) {
            Conductor conductor = new Conductor(Set.of(), Set.of());
            Conductor.EventRun run = Conductor.newEvent("conductor");
            run.runWith(conductor.withSinkd(client, ServedQueueTypes.fixed(Set.of("conductor"))));
            assertEquals(TaskModel.Status.COMPLETED, run.task().getStatus(), run.task().getReasonForIncompletion());
            String row = "";
            long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
            while (row.isEmpty() && System.nanoTime() < deadline) {
                row = postgres.psql("conductor", "SELECT queue_name, message_id, payload FROM queue_message");
                if (row.isEmpty()) {
                    Thread.sleep(50);
                }
            }
            assertEquals("order_flow:notify_ref|" + run.task().getTaskId() + "|" + conductor.objectMapper.writeValueAsString(run.task().getOutputData()), row);
        }
    }
}
