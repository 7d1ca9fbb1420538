package io.sinkd.conductor;

import com.netflix.conductor.core.events.EventQueueProvider;
import com.netflix.conductor.core.events.queue.ObservableQueue;
import java.util.concurrent.ConcurrentHashMap;

/** Conductor's provider for one queue type, whose queues publish through sinkd. */
public final class SinkdEventQueueProvider implements EventQueueProvider {
    private final EventQueueProvider delegate;
    private final SinkdClient client;
    private final ServedQueueTypes served;
    private final ConcurrentHashMap<String, SinkdPublishingQueue> queues = new ConcurrentHashMap<>();

    /** Every EVENT task message of this type goes through sinkd. */
    public SinkdEventQueueProvider(EventQueueProvider delegate, SinkdClient client) {
        this(delegate, client, ServedQueueTypes.fixed(java.util.Set.of(delegate.getQueueType())));
    }

    public SinkdEventQueueProvider(EventQueueProvider delegate, SinkdClient client, ServedQueueTypes served) {
        this.delegate = delegate;
        this.client = client;
        this.served = served;
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
        return queues.computeIfAbsent(queueURI, uri -> new SinkdPublishingQueue(delegate.getQueue(uri), client, served, delegate.getQueueType(), uri));
    }
}
