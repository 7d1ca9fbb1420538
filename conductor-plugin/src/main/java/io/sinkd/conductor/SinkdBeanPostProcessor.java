package io.sinkd.conductor;

import com.netflix.conductor.core.events.EventQueueProvider;
import java.util.Set;
import org.springframework.beans.factory.config.BeanPostProcessor;

/**
 * Wraps every {@link EventQueueProvider} bean whose queue type may go through sinkd (every one when
 * sinkd is asked which it serves, see {@link ServedQueueTypes}), so that its queues publish through
 * sinkd; Conductor's own modules stay switched on (nothing to disable, and consumers keep their
 * queues).
 */
public final class SinkdBeanPostProcessor implements BeanPostProcessor {
    private final ServedQueueTypes served;
    private final SinkdClient client;

    public SinkdBeanPostProcessor(Set<String> queueTypes, SinkdClient client) {
        this(ServedQueueTypes.fixed(queueTypes), client);
    }

    public SinkdBeanPostProcessor(ServedQueueTypes served, SinkdClient client) {
        this.served = served;
        this.client = client;
    }

    @Override
    public Object postProcessAfterInitialization(Object bean, String beanName) {
        if (bean instanceof EventQueueProvider provider && !(bean instanceof SinkdEventQueueProvider)
                && served.mayServe(provider.getQueueType())) {
            return new SinkdEventQueueProvider(provider, client, served);
        }
        return bean;
    }
}
