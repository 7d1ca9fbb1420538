package com.netflix.conductor.core.events;

import com.netflix.conductor.core.events.queue.ObservableQueue;
import org.springframework.lang.NonNull;

// Compile-only stand-in (never packaged); upstream: see conductor-plugin/STANDINS.md.
public interface EventQueueProvider {
    String getQueueType();

    @NonNull
    ObservableQueue getQueue(String queueURI) throws IllegalArgumentException;
}
