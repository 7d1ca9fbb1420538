package com.netflix.conductor.model;

import com.netflix.conductor.common.metadata.workflow.WorkflowDef;
import java.util.HashMap;
import java.util.LinkedList;
import java.util.List;
import java.util.Map;

// Compile-only stand-in (never packaged); upstream: see conductor-plugin/STANDINS.md. Name and
// version come from the definition, as upstream.
public class WorkflowModel {
    private String workflowId;
    private String correlationId;
    private WorkflowDef workflowDefinition;
    private List<TaskModel> tasks = new LinkedList<>();
    private Map<String, String> taskToDomain = new HashMap<>();

    public String getWorkflowId() { return workflowId; }
    public void setWorkflowId(String workflowId) { this.workflowId = workflowId; }
    public String getCorrelationId() { return correlationId; }
    public void setCorrelationId(String correlationId) { this.correlationId = correlationId; }
    public WorkflowDef getWorkflowDefinition() { return workflowDefinition; }
    public void setWorkflowDefinition(WorkflowDef workflowDefinition) { this.workflowDefinition = workflowDefinition; }
    public List<TaskModel> getTasks() { return tasks; }
    public void setTasks(List<TaskModel> tasks) { this.tasks = tasks; }
    public Map<String, String> getTaskToDomain() { return taskToDomain; }
    public void setTaskToDomain(Map<String, String> taskToDomain) { this.taskToDomain = taskToDomain; }

    public String getWorkflowName() {
        if (workflowDefinition == null) {
            throw new NullPointerException("Workflow definition is null");
        }
        return workflowDefinition.getName();
    }

    public int getWorkflowVersion() {
        if (workflowDefinition == null) {
            throw new NullPointerException("Workflow definition is null");
        }
        return workflowDefinition.getVersion();
    }
}
