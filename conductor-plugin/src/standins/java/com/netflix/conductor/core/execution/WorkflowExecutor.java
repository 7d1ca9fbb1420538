package com.netflix.conductor.core.execution;

// Compile-only stand-in (never packaged); upstream: see conductor-plugin/STANDINS.md. An interface
// upstream too; the plugin only passes it through.
public interface WorkflowExecutor {}
