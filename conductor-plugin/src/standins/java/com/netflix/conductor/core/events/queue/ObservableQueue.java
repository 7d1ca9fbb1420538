package com.netflix.conductor.core.events.queue;

import java.util.List;
import org.springframework.context.Lifecycle;
import rx.Observable;

// Compile-only stand-in (never packaged); upstream: see conductor-plugin/STANDINS.md.
public interface ObservableQueue extends Lifecycle {
    Observable<Message> observe();

    String getType();

    String getName();

    String getURI();

    List<String> ack(List<Message> messages);

    default void nack(List<Message> messages) {}

    void publish(List<Message> messages);

    default boolean rePublishIfNoAck() {
        return false;
    }

    void setUnackTimeout(Message message, long unackTimeout);

    long size();

    default void close() {}
}
