package com.netflix.conductor.core.execution.tasks;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.netflix.conductor.core.events.EventQueues;
import com.netflix.conductor.core.events.queue.Message;
import com.netflix.conductor.core.events.queue.ObservableQueue;
import com.netflix.conductor.core.execution.WorkflowExecutor;
import com.netflix.conductor.core.utils.ParametersUtils;
import com.netflix.conductor.model.TaskModel;
import com.netflix.conductor.model.WorkflowModel;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

// Compile-only stand-in (never packaged); upstream: see conductor-plugin/STANDINS.md. It behaves as
// upstream's Event does (the tests play Conductor with it): start() fills the output and
// event_produced (the sink, `conductor` expanded), execute() publishes Message(taskId, output as
// JSON, taskId) through Conductor's provider of the type and completes the task unless
// asyncComplete, any exception fails the task with its message. Upstream also evaluates ${...} in
// the sink, which the tests do not use.
public class Event extends WorkflowSystemTask {
    public static final String NAME = "EVENT";

    private final ObjectMapper objectMapper;
    private final EventQueues eventQueues;

    public Event(EventQueues eventQueues, ParametersUtils parametersUtils, ObjectMapper objectMapper) {
        super(NAME);
        this.eventQueues = eventQueues;
        this.objectMapper = objectMapper;
    }

    @Override
    public void start(WorkflowModel workflow, TaskModel task, WorkflowExecutor workflowExecutor) {
        Map<String, Object> payload = new HashMap<>(task.getInputData());
        payload.put("workflowInstanceId", workflow.getWorkflowId());
        payload.put("workflowType", workflow.getWorkflowName());
        payload.put("workflowVersion", workflow.getWorkflowVersion());
        payload.put("correlationId", workflow.getCorrelationId());
        payload.put("taskToDomain", workflow.getTaskToDomain());
        task.setStatus(TaskModel.Status.IN_PROGRESS);
        task.addOutput(payload);
        try {
            task.addOutput("event_produced", computeQueueName(workflow, task));
        } catch (Exception e) {
            task.setStatus(TaskModel.Status.FAILED);
            task.setReasonForIncompletion(e.getMessage());
        }
    }

    @Override
    public boolean execute(WorkflowModel workflow, TaskModel task, WorkflowExecutor workflowExecutor) {
        try {
            ObservableQueue queue = getQueue((String) task.getOutputData().get("event_produced"), task.getTaskId());
            queue.publish(List.of(new Message(task.getTaskId(), objectMapper.writeValueAsString(task.getOutputData()), task.getTaskId())));
            if (!isAsyncComplete(task)) {
                task.setStatus(TaskModel.Status.COMPLETED);
                return true;
            }
        } catch (JsonProcessingException jpe) {
            task.setStatus(TaskModel.Status.FAILED);
            task.setReasonForIncompletion("Error serializing JSON payload: " + jpe.getMessage());
        } catch (Exception e) {
            task.setStatus(TaskModel.Status.FAILED);
            task.setReasonForIncompletion(e.getMessage());
        }
        return false;
    }

    @Override
    public void cancel(WorkflowModel workflow, TaskModel task, WorkflowExecutor workflowExecutor) {
        getQueue(computeQueueName(workflow, task), task.getTaskId()).ack(List.of(new Message(task.getTaskId(), null, task.getTaskId())));
    }

    String computeQueueName(WorkflowModel workflow, TaskModel task) {
        String sink = (String) task.getInputData().get("sink");
        if (!sink.startsWith("conductor")) {
            return sink;
        }
        if ("conductor".equals(sink)) {
            return "conductor:" + workflow.getWorkflowName() + ":" + task.getReferenceTaskName();
        }
        if (sink.startsWith("conductor:")) {
            return "conductor:" + workflow.getWorkflowName() + ":" + sink.replaceAll("conductor:", "");
        }
        throw new IllegalStateException("Invalid / Unsupported sink specified: " + sink);
    }

    ObservableQueue getQueue(String queueName, String taskId) {
        try {
            return eventQueues.getQueue(queueName);
        } catch (IllegalArgumentException e) {
            throw new IllegalStateException("Error loading queue:" + queueName + ", for task:" + taskId + ", error: " + e.getMessage());
        }
    }
}
