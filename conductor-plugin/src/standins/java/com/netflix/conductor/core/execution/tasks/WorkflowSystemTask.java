package com.netflix.conductor.core.execution.tasks;

import com.netflix.conductor.core.execution.WorkflowExecutor;
import com.netflix.conductor.model.TaskModel;
import com.netflix.conductor.model.WorkflowModel;
import java.util.Optional;

// Compile-only stand-in (never packaged); upstream: see conductor-plugin/STANDINS.md. Every public
// member upstream has, with its signature and its default behaviour.
public abstract class WorkflowSystemTask {
    private final String taskType;

    public WorkflowSystemTask(String taskType) {
        this.taskType = taskType;
    }

    public void start(WorkflowModel workflow, TaskModel task, WorkflowExecutor workflowExecutor) {}

    public boolean execute(WorkflowModel workflow, TaskModel task, WorkflowExecutor workflowExecutor) {
        return false;
    }

    public void cancel(WorkflowModel workflow, TaskModel task, WorkflowExecutor workflowExecutor) {}

    public Optional<Long> getEvaluationOffset(TaskModel taskModel, long maxOffset) {
        return Optional.empty();
    }

    public boolean isAsync() {
        return false;
    }

    public boolean isAsyncComplete(TaskModel task) {
        if (task.getInputData().containsKey("asyncComplete")) {
            return Optional.ofNullable(task.getInputData().get("asyncComplete")).map(result -> (Boolean) result).orElse(false);
        }
        return task.getWorkflowTask() != null && task.getWorkflowTask().isAsyncComplete();
    }

    public String getTaskType() {
        return taskType;
    }

    public boolean isTaskRetrievalRequired() {
        return true;
    }

    @Override
    public String toString() {
        return taskType;
    }
}
