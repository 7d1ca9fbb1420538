package org.springframework.context;

// Compile-only stand-in (never packaged); upstream: see conductor-plugin/STANDINS.md.
public interface Lifecycle {
    void start();

    void stop();

    boolean isRunning();
}
