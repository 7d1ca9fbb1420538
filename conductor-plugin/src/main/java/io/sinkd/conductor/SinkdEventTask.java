package io.sinkd.conductor;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.netflix.conductor.core.execution.WorkflowExecutor;
import com.netflix.conductor.core.execution.tasks.WorkflowSystemTask;
import com.netflix.conductor.model.TaskModel;
import com.netflix.conductor.model.WorkflowModel;
import java.io.IOException;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.function.Predicate;
import java.util.function.UnaryOperator;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Conductor's EVENT system task with its publish going to sinkd: the bean named {@code EVENT}
 * (Conductor's {@code Event}) is replaced by this one ({@link SinkdEventTaskPostProcessor}), which
 * keeps Conductor's own task for everything but the publish of a type sinkd serves.
 *
 * <ul>
 *   <li>{@code start} is Conductor's: it fills the task output (the payload) and
 *       {@code event_produced} (the sink, {@code conductor} expanded).
 *   <li>{@code execute} reads the queue type and URI from {@code event_produced} as Conductor's
 *       EventQueues does (first ':'), and for a type sinkd serves hands the record to sinkd, never
 *       touching Conductor's queue objects: no broker call, no provider needed. Other types go
 *       through Conductor's own task, unchanged.
 *   <li>The record's id is stable across Conductor's retries of the task ({@link #dedupeKey}), it
 *       carries the context fields, and the publish is bounded by one deadline with retries inside
 *       it ({@link SinkdClient}): a sinkd restart fails no task. Only a non-retryable refusal or
 *       the deadline fails the task, with a reason that says what to do.
 * </ul>
 */
public final class SinkdEventTask extends WorkflowSystemTask {
    private static final Logger LOG = LoggerFactory.getLogger(SinkdEventTask.class);
    static final String EVENT_PRODUCED = "event_produced";

    private final WorkflowSystemTask conductors;
    private final SinkdClient client;
    private final ServedQueueTypes served;
    private final ObjectMapper objectMapper;
    private final UnaryOperator<String> resolveExpressions;
    private final Predicate<String> conductorHasProvider;

    /**
     * @param conductors Conductor's own EVENT task (the bean this one replaces)
     * @param objectMapper Conductor's ObjectMapper: the payload is serialized as Conductor's Event does
     * @param resolveExpressions Conductor's ParametersUtils.replace, which EventQueues applies to the queue name
     * @param conductorHasProvider whether Conductor has an event queue provider of a type
     */
    public SinkdEventTask(WorkflowSystemTask conductors, SinkdClient client, ServedQueueTypes served, ObjectMapper objectMapper,
            UnaryOperator<String> resolveExpressions, Predicate<String> conductorHasProvider) {
        super(conductors.getTaskType());
        this.conductors = conductors;
        this.client = client;
        this.served = served;
        this.objectMapper = objectMapper;
        this.resolveExpressions = resolveExpressions;
        this.conductorHasProvider = conductorHasProvider;
    }

    /** Conductor's own EVENT task, which this one replaces. */
    public WorkflowSystemTask conductors() {
        return conductors;
    }

    @Override
    public void start(WorkflowModel workflow, TaskModel task, WorkflowExecutor workflowExecutor) {
        conductors.start(workflow, task, workflowExecutor);
    }

    @Override
    public boolean execute(WorkflowModel workflow, TaskModel task, WorkflowExecutor workflowExecutor) {
        try {
            return executeOrThrow(workflow, task, workflowExecutor);
        } catch (RuntimeException e) {
            // As Conductor's Event: whatever goes wrong fails the task with the reason, never the decide.
            return fail(workflow, task, String.valueOf(e.getMessage() == null ? e : e.getMessage()));
        }
    }

    private boolean executeOrThrow(WorkflowModel workflow, TaskModel task, WorkflowExecutor workflowExecutor) {
        long deadline = System.nanoTime() + client.deadline().toNanos();
        Object produced = task.getOutputData().get(EVENT_PRODUCED);
        String queueName = produced instanceof String s ? resolve(s) : null;
        int colon = queueName == null ? -1 : queueName.indexOf(':');
        if (colon < 0) {
            // Not a queue name Conductor could publish to either: its own task says why.
            return conductors.execute(workflow, task, workflowExecutor);
        }
        String type = queueName.substring(0, colon);
        String uri = queueName.substring(colon + 1);
        switch (served.serves(type, deadline)) {
            case NOT_SERVED -> {
                return conductors.execute(workflow, task, workflowExecutor);
            }
            case UNKNOWN -> {
                if (conductorHasProvider.test(type)) {
                    LOG.warn("sinkd at {} has not said which queue types it serves since Conductor started: task {} publishes to {} through Conductor's own queue",
                            client.socket(), task.getTaskId(), queueName);
                    return conductors.execute(workflow, task, workflowExecutor);
                }
                return fail(workflow, task, "sinkd at " + client.socket() + " has not answered since Conductor started, and Conductor has no "
                        + type + " event queue of its own: check that sinkd runs (systemctl status sinkd), or set conductor.sinkd.queue-types");
            }
            case SERVED -> {
                // below
            }
        }
        String payload;
        try {
            payload = objectMapper.writeValueAsString(task.getOutputData());
        } catch (IOException e) {
            // JsonProcessingException (Debian's Jackson also declares IOException)
            return fail(workflow, task, "Error serializing JSON payload: " + e.getMessage());
        }
        try {
            SinkdClient.Context context = new SinkdClient.Context(workflow.getWorkflowId(), workflowName(workflow),
                    workflow.getCorrelationId(), task.getReferenceTaskName());
            SinkdClient.Result result = client.publish(dedupeKey(workflow, task), type, uri, payload, context, deadline);
            LOG.debug("EVENT task {} handed to sinkd for {}: {} as seq {}", task.getTaskId(), queueName, result.status(), result.seq());
        } catch (SinkdException e) {
            return fail(workflow, task, e.getMessage());
        }
        if (!isAsyncComplete(task)) {
            task.setStatus(TaskModel.Status.COMPLETED);
            return true;
        }
        return false;
    }

    private String resolve(String queueName) {
        // EventQueues evaluates ${...} once more in the queue name; nothing to evaluate otherwise.
        return queueName.contains("${") ? String.valueOf(resolveExpressions.apply(queueName)) : queueName;
    }

    private static String workflowName(WorkflowModel workflow) {
        return workflow.getWorkflowDefinition() == null ? null : workflow.getWorkflowName();
    }

    /** As Conductor's Event fails a task: FAILED with the reason, and false. */
    private boolean fail(WorkflowModel workflow, TaskModel task, String reason) {
        task.setStatus(TaskModel.Status.FAILED);
        task.setReasonForIncompletion(reason);
        LOG.error("EVENT task {} of workflow {} failed: {}", task.getTaskId(), workflow.getWorkflowId(), reason);
        return false;
    }

    /**
     * The record id: the taskId of the first attempt of this task. Conductor's retry of a failed
     * task (DeciderService.retry, and a workflow retry, WorkflowExecutorOps) is a new task with a
     * new taskId whose {@code retriedTaskId} names the one it replaces; following that chain
     * through the workflow's tasks gives every retry the same id, so that sinkd answers a retry of
     * a publish it had stored (an outcome that was unknown to Conductor) {@code duplicate} instead
     * of forwarding a second copy. A first attempt's id is its own taskId, Conductor's message id.
     * A chain that leaves the workflow's task list ends at the last id it named.
     */
    static String dedupeKey(WorkflowModel workflow, TaskModel task) {
        String id = task.getTaskId();
        String previous = task.getRetriedTaskId();
        if (previous == null || previous.isEmpty()) {
            return id;
        }
        Map<String, TaskModel> byId = new HashMap<>();
        List<TaskModel> tasks = workflow.getTasks();
        if (tasks != null) {
            for (TaskModel t : tasks) {
                if (t.getTaskId() != null) {
                    byId.put(t.getTaskId(), t);
                }
            }
        }
        Set<String> seen = new HashSet<>();
        seen.add(id);
        while (previous != null && !previous.isEmpty() && seen.add(previous)) {
            id = previous;
            TaskModel earlier = byId.get(previous);
            previous = earlier == null ? null : earlier.getRetriedTaskId();
        }
        return id;
    }

    /**
     * Conductor's cancel (it acks the message on Conductor's queue of the type) where Conductor has
     * that queue; a type only sinkd publishes has nothing to cancel on Conductor's side (sinkd
     * cannot take a message back).
     */
    @Override
    public void cancel(WorkflowModel workflow, TaskModel task, WorkflowExecutor workflowExecutor) {
        Object produced = task.getOutputData().get(EVENT_PRODUCED);
        if (produced instanceof String s && s.indexOf(':') > 0 && !conductorHasProvider.test(s.substring(0, s.indexOf(':')))) {
            return;
        }
        conductors.cancel(workflow, task, workflowExecutor);
    }

    @Override
    public Optional<Long> getEvaluationOffset(TaskModel taskModel, long maxOffset) {
        return conductors.getEvaluationOffset(taskModel, maxOffset);
    }

    @Override
    public boolean isAsync() {
        return conductors.isAsync();
    }

    @Override
    public boolean isAsyncComplete(TaskModel task) {
        return conductors.isAsyncComplete(task);
    }

    @Override
    public boolean isTaskRetrievalRequired() {
        return conductors.isTaskRetrievalRequired();
    }
}
