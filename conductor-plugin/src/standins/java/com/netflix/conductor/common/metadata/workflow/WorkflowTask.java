package com.netflix.conductor.common.metadata.workflow;

// Compile-only stand-in (never packaged); upstream: see conductor-plugin/STANDINS.md.
public class WorkflowTask {
    private boolean asyncComplete;

    public boolean isAsyncComplete() {
        return asyncComplete;
    }

    public void setAsyncComplete(boolean asyncComplete) {
        this.asyncComplete = asyncComplete;
    }
}
