package io.sinkd.conductor;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.netflix.conductor.common.metadata.workflow.WorkflowDef;
import com.netflix.conductor.core.events.EventQueueProvider;
import com.netflix.conductor.core.events.EventQueues;
import com.netflix.conductor.core.events.queue.Message;
import com.netflix.conductor.core.events.queue.ObservableQueue;
import com.netflix.conductor.core.execution.tasks.Event;
import com.netflix.conductor.core.utils.ParametersUtils;
import com.netflix.conductor.model.TaskModel;
import com.netflix.conductor.model.WorkflowModel;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import rx.Observable;

/**
 * Conductor, as far as an EVENT task goes: its Event task (the stand-in, which behaves as
 * upstream's), its EventQueues over providers of the given types whose queues record what is
 * published to them (or whose construction throws: a broker that is down), and the decider's
 * calls for one EVENT task: start, then execute. Conductor's own classes cannot run here (no
 * Maven repository, none in Debian): STANDINS.md.
 */
final class Conductor {
    final ObjectMapper objectMapper = new ObjectMapper();
    final ParametersUtils parametersUtils = new ParametersUtils(objectMapper);
    final Map<String, EventQueueProvider> providers = new HashMap<>();
    final Event event;

    /** {@code types}: Conductor's providers; {@code down}: those whose getQueue throws. */
    Conductor(Set<String> types, Set<String> down) {
        for (String type : types) {
            providers.put(type, new Provider(type, down.contains(type)));
        }
        event = new Event(new EventQueues(providers, parametersUtils), parametersUtils, objectMapper);
    }

    SinkdEventTask withSinkd(SinkdClient client, ServedQueueTypes served) {
        return new SinkdEventTask(event, client, served, objectMapper, name -> String.valueOf(parametersUtils.replace(name)), providers::containsKey);
    }

    /** What Conductor's own queue of {@code type} got published, by URI. */
    List<Message> published(String type, String uri) {
        return ((Provider) providers.get(type)).queue(uri).published;
    }

    static WorkflowModel workflow(String id, String name) {
        WorkflowModel workflow = new WorkflowModel();
        workflow.setWorkflowId(id);
        WorkflowDef def = new WorkflowDef();
        def.setName(name);
        def.setVersion(3);
        workflow.setWorkflowDefinition(def);
        workflow.setCorrelationId("corr-" + id);
        return workflow;
    }

    static TaskModel eventTask(WorkflowModel workflow, String taskId, String refName, String sink) {
        TaskModel task = new TaskModel();
        task.setTaskType("EVENT");
        task.setTaskId(taskId);
        task.setReferenceTaskName(refName);
        task.setStatus(TaskModel.Status.SCHEDULED);
        Map<String, Object> input = new HashMap<>();
        input.put("sink", sink);
        input.put("orderId", 42);
        task.setInputData(input);
        workflow.getTasks().add(task);
        return task;
    }

    /** The decider's calls for a new EVENT task: start, then execute unless start ended it. */
    static TaskModel run(com.netflix.conductor.core.execution.tasks.WorkflowSystemTask eventTask, WorkflowModel workflow, TaskModel task) {
        eventTask.start(workflow, task, null);
        if (!task.getStatus().isTerminal()) {
            eventTask.execute(workflow, task, null);
        }
        return task;
    }

    /** One EVENT task of a workflow. */
    record EventRun(WorkflowModel workflow, TaskModel task) {
        TaskModel runWith(com.netflix.conductor.core.execution.tasks.WorkflowSystemTask eventTask) {
            return run(eventTask, workflow, task);
        }
    }

    /** A fresh workflow with one EVENT task to {@code sink}. */
    static EventRun newEvent(String sink) {
        WorkflowModel workflow = workflow(UUID.randomUUID().toString(), "order_flow");
        return new EventRun(workflow, eventTask(workflow, UUID.randomUUID().toString(), "notify_ref", sink));
    }

    static final class Provider implements EventQueueProvider {
        private final String type;
        private final boolean down;
        private final Map<String, RecordingQueue> queues = new ConcurrentHashMap<>();

        Provider(String type, boolean down) {
            this.type = type;
            this.down = down;
        }

        @Override
        public String getQueueType() {
            return type;
        }

        @Override
        public ObservableQueue getQueue(String queueURI) {
            if (down) {
                throw new IllegalStateException("cannot reach the " + type + " broker (ListQueues timed out)");
            }
            return queue(queueURI);
        }

        RecordingQueue queue(String uri) {
            return queues.computeIfAbsent(uri, u -> new RecordingQueue(type, u));
        }
    }

    /** Conductor's own queue of a type: records publishes and acks. */
    static final class RecordingQueue implements ObservableQueue {
        final String type;
        final String uri;
        final List<Message> published = Collections.synchronizedList(new ArrayList<>());
        final List<String> acked = Collections.synchronizedList(new ArrayList<>());

        RecordingQueue(String type, String uri) {
            this.type = type;
            this.uri = uri;
        }

        @Override public Observable<Message> observe() { return null; }
        @Override public String getType() { return type; }
        @Override public String getName() { return uri; }
        @Override public String getURI() { return uri; }
        @Override public List<String> ack(List<Message> messages) {
            messages.forEach(m -> acked.add(m.getId()));
            return List.of();
        }
        @Override public void publish(List<Message> messages) { published.addAll(messages); }
        @Override public void setUnackTimeout(Message message, long unackTimeout) {}
        @Override public long size() { return published.size(); }
        @Override public void start() {}
        @Override public void stop() {}
        @Override public boolean isRunning() { return true; }
    }
}
