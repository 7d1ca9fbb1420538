package io.sinkd.conductor;

import com.netflix.conductor.core.events.EventQueueProvider;
import com.netflix.conductor.core.events.queue.ObservableQueue;
import java.util.concurrent.ConcurrentHashMap;

/** Conductor's provider for one queue type, whose queues publish through sinkd. */
public final class SinkdEventQueueProvider implements EventQueueProvider {
    private final EventQueueProvider delegate;
    private final SinkdClient client;
    private final ConcurrentHashMap<String, SinkdPublishingQueue> queues = new ConcurrentHashMap<>();

    public SinkdEventQueueProvider(EventQueueProvider delegate, SinkdClient client) {
        this.delegate = delegate;
        this.client = client;
    }

    public EventQueueProvider delegate() {
        return delegate;
    }

    @Override
    public String getQueueType() {
        return delegate.getQueueType();
    }

    @Override
    public ObservableQueue getQueue(String queueURI) throws IllegalArgumentException {
        return queues.computeIfAbsent(queueURI, uri -> new SinkdPublishingQueue(delegate.getQueue(uri), client, delegate.getQueueType(), uri));
    }
}
