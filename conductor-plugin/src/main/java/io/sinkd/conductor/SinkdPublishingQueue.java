package io.sinkd.conductor;

import com.netflix.conductor.core.events.queue.Message;
import com.netflix.conductor.core.events.queue.ObservableQueue;
import java.util.List;
import rx.Observable;

/**
 * Conductor's own queue, except that {@link #publish} goes through sinkd: each message is made
 * durable by sinkd (which then forwards it to this queue's destination) before publish returns,
 * and a refusal throws, which fails the EVENT task so that Conductor retries it. Everything
 * else (observe, ack, nack, size, the lifecycle) is the wrapped queue's, untouched, so event
 * handlers consuming from this queue keep working.
 */
public final class SinkdPublishingQueue implements ObservableQueue {
    private final ObservableQueue delegate;
    private final SinkdClient client;
    private final ServedQueueTypes served;
    private final String queueType;
    private final String queueURI;

    public SinkdPublishingQueue(ObservableQueue delegate, SinkdClient client, String queueType, String queueURI) {
        this(delegate, client, ServedQueueTypes.fixed(java.util.Set.of(queueType)), queueType, queueURI);
    }

    /** {@code served} decides at each publish whether this queue's type goes through sinkd. */
    public SinkdPublishingQueue(ObservableQueue delegate, SinkdClient client, ServedQueueTypes served, String queueType, String queueURI) {
        this.delegate = delegate;
        this.client = client;
        this.served = served;
        this.queueType = queueType;
        this.queueURI = queueURI;
    }

    /** The queue Conductor's provider made. */
    public ObservableQueue delegate() {
        return delegate;
    }

    /**
     * An EVENT task's message (Conductor's Event task builds it with id = receipt = the taskId)
     * goes through sinkd. Any other message goes to Conductor's own queue as before: the event
     * processor puts a consumed message back on its queue through publish when its handling
     * failed transiently (that message carries the broker's receipt), and sinkd would answer such
     * a message "duplicate" (same id within its dedupe window) instead of re-queueing it. A
     * queue type sinkd does not serve (see {@link ServedQueueTypes}) publishes as before too.
     */
    @Override
    public void publish(List<Message> messages) {
        for (Message m : messages) {
            if (isEventTaskMessage(m) && served.serves(queueType)) {
                client.publish(m.getId(), queueType, queueURI, m.getPayload() == null ? "null" : m.getPayload(), SinkdClient.Context.NONE);
            } else {
                delegate.publish(List.of(m));
            }
        }
    }

    static boolean isEventTaskMessage(Message m) {
        return m.getId() != null && m.getId().equals(m.getReceipt());
    }

    @Override
    public Observable<Message> observe() {
        return delegate.observe();
    }

    @Override
    public String getType() {
        return delegate.getType();
    }

    @Override
    public String getName() {
        return delegate.getName();
    }

    @Override
    public String getURI() {
        return delegate.getURI();
    }

    @Override
    public List<String> ack(List<Message> messages) {
        return delegate.ack(messages);
    }

    @Override
    public void nack(List<Message> messages) {
        delegate.nack(messages);
    }

    @Override
    public boolean rePublishIfNoAck() {
        return delegate.rePublishIfNoAck();
    }

    @Override
    public void setUnackTimeout(Message message, long unackTimeout) {
        delegate.setUnackTimeout(message, unackTimeout);
    }

    @Override
    public long size() {
        return delegate.size();
    }

    @Override
    public void close() {
        delegate.close();
    }

    @Override
    public void start() {
        delegate.start();
    }

    @Override
    public void stop() {
        delegate.stop();
    }

    @Override
    public boolean isRunning() {
        return delegate.isRunning();
    }
}
