package com.netflix.conductor.model;

import com.netflix.conductor.common.metadata.workflow.WorkflowTask;
import java.util.HashMap;
import java.util.Map;

// Compile-only stand-in (never packaged); upstream: see conductor-plugin/STANDINS.md. Only the
// members the plugin and its tests use, with upstream's signatures.
public class TaskModel {
    public enum Status {
        IN_PROGRESS(false, true, true),
        CANCELED(true, false, false),
        FAILED(true, false, true),
        FAILED_WITH_TERMINAL_ERROR(true, false, false),
        COMPLETED(true, true, true),
        COMPLETED_WITH_ERRORS(true, true, true),
        SCHEDULED(false, true, true),
        TIMED_OUT(true, false, true),
        SKIPPED(true, true, false);

        private final boolean terminal;
        private final boolean successful;
        private final boolean retriable;

        Status(boolean terminal, boolean successful, boolean retriable) {
            this.terminal = terminal;
            this.successful = successful;
            this.retriable = retriable;
        }

        public boolean isTerminal() { return terminal; }
        public boolean isSuccessful() { return successful; }
        public boolean isRetriable() { return retriable; }
    }

    private String taskType;
    private Status status;
    private Map<String, Object> inputData = new HashMap<>();
    private Map<String, Object> outputData = new HashMap<>();
    private String referenceTaskName;
    private String retriedTaskId;
    private String taskId;
    private String reasonForIncompletion;
    private WorkflowTask workflowTask;

    public String getTaskType() { return taskType; }
    public void setTaskType(String taskType) { this.taskType = taskType; }
    public Status getStatus() { return status; }
    public void setStatus(Status status) { this.status = status; }
    public Map<String, Object> getInputData() { return inputData; }
    public void setInputData(Map<String, Object> inputData) { this.inputData = inputData == null ? new HashMap<>() : inputData; }
    public String getReferenceTaskName() { return referenceTaskName; }
    public void setReferenceTaskName(String referenceTaskName) { this.referenceTaskName = referenceTaskName; }
    public String getRetriedTaskId() { return retriedTaskId; }
    public void setRetriedTaskId(String retriedTaskId) { this.retriedTaskId = retriedTaskId; }
    public String getTaskId() { return taskId; }
    public void setTaskId(String taskId) { this.taskId = taskId; }
    public String getReasonForIncompletion() { return reasonForIncompletion; }
    public void setReasonForIncompletion(String reasonForIncompletion) { this.reasonForIncompletion = reasonForIncompletion; }
    public Map<String, Object> getOutputData() { return outputData; }
    public void setOutputData(Map<String, Object> outputData) { this.outputData = outputData == null ? new HashMap<>() : outputData; }
    public WorkflowTask getWorkflowTask() { return workflowTask; }
    public void setWorkflowTask(WorkflowTask workflowTask) { this.workflowTask = workflowTask; }

    public void addOutput(String key, Object value) {
        this.outputData.put(key, value);
    }

    public void addOutput(Map<String, Object> outputData) {
        this.outputData.putAll(outputData);
    }
}
