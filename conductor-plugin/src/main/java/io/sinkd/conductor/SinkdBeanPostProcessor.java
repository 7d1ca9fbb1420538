package io.sinkd.conductor;

import com.netflix.conductor.core.events.EventQueueProvider;
import java.util.Set;
import org.springframework.beans.factory.config.BeanPostProcessor;

/**
 * Wraps every {@link EventQueueProvider} bean whose queue type is in {@code queueTypes}, so that
 * its queues publish through sinkd; Conductor's own modules stay switched on (nothing to disable,
 * and consumers keep their queues).
 */
public final class SinkdBeanPostProcessor implements BeanPostProcessor {
    private final Set<String> queueTypes;
    private final SinkdClient client;

    public SinkdBeanPostProcessor(Set<String> queueTypes, SinkdClient client) {
        this.queueTypes = Set.copyOf(queueTypes);
        this.client = client;
    }

    @Override
    public Object postProcessAfterInitialization(Object bean, String beanName) {
        if (bean instanceof EventQueueProvider provider && !(bean instanceof SinkdEventQueueProvider)
                && queueTypes.contains(provider.getQueueType())) {
            return new SinkdEventQueueProvider(provider, client);
        }
        return bean;
    }
}
