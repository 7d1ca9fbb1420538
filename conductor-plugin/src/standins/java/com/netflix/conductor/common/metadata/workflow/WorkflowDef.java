package com.netflix.conductor.common.metadata.workflow;

// Compile-only stand-in (never packaged); upstream: see conductor-plugin/STANDINS.md.
public class WorkflowDef {
    private String name;
    private int version = 1;

    public String getName() {
        return name;
    }

    public void setName(String name) {
        this.name = name;
    }

    public int getVersion() {
        return version;
    }

    public void setVersion(int version) {
        this.version = version;
    }
}
