package io.sinkd.conductor;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.netflix.conductor.core.events.EventQueueProvider;
import com.netflix.conductor.core.execution.tasks.WorkflowSystemTask;
import com.netflix.conductor.core.utils.ParametersUtils;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.BeansException;
import org.springframework.beans.factory.BeanFactory;
import org.springframework.beans.factory.BeanFactoryAware;
import org.springframework.beans.factory.DisposableBean;
import org.springframework.beans.factory.config.BeanPostProcessor;

/**
 * Replaces Conductor's EVENT system task (the bean whose {@code getTaskType()} is {@code EVENT},
 * Conductor's {@code Event}) with a {@link SinkdEventTask} wrapping it. Conductor's
 * SystemTaskRegistry collects every WorkflowSystemTask bean by type, so the replacement is what
 * the decider runs. Nothing else is touched: event queue providers and their queues stay
 * Conductor's own (consumers and the event processor's re-publish work as without the plugin);
 * the post-processor only notes which queue types Conductor has a provider for.
 *
 * <p>Both BeanPostProcessor methods are implemented (Spring 4 has no defaults; Spring 6 accepts both).
 */
public final class SinkdEventTaskPostProcessor implements BeanPostProcessor, BeanFactoryAware, DisposableBean {
    private static final Logger LOG = LoggerFactory.getLogger(SinkdEventTaskPostProcessor.class);
    public static final String EVENT = "EVENT";

    private final SinkdSettings settings;
    private final SinkdClient client;
    private final ServedQueueTypes served;
    private final Set<String> conductorProviderTypes = ConcurrentHashMap.newKeySet();
    private BeanFactory beanFactory;

    public SinkdEventTaskPostProcessor(SinkdSettings settings) {
        this.settings = settings;
        this.client = new SinkdClient(settings.socket(), settings.connections(), settings.publishTimeout());
        this.served = settings.queueTypes() == null
                ? ServedQueueTypes.askingSinkd(client, SinkdAutoConfiguration.QUEUE_TYPES_MAX_AGE)
                : ServedQueueTypes.fixed(settings.queueTypes());
    }

    @Override
    public void setBeanFactory(BeanFactory beanFactory) throws BeansException {
        this.beanFactory = beanFactory;
    }

    @Override
    public Object postProcessBeforeInitialization(Object bean, String beanName) throws BeansException {
        return bean;
    }

    @Override
    public Object postProcessAfterInitialization(Object bean, String beanName) throws BeansException {
        if (bean instanceof EventQueueProvider provider) {
            conductorProviderTypes.add(provider.getQueueType());
            return bean;
        }
        if (bean instanceof WorkflowSystemTask task && EVENT.equals(task.getTaskType()) && !(bean instanceof SinkdEventTask)) {
            ObjectMapper objectMapper = beanFactory.getBean(ObjectMapper.class);
            ParametersUtils parametersUtils = beanFactory.getBean(ParametersUtils.class);
            LOG.info(settings.describe());
            return new SinkdEventTask(task, client, served, objectMapper, name -> String.valueOf(parametersUtils.replace(name)),
                    conductorProviderTypes::contains);
        }
        return bean;
    }

    /** The queue types Conductor has an event queue provider of (seen as its beans were made). */
    public Set<String> conductorProviderTypes() {
        return Set.copyOf(conductorProviderTypes);
    }

    @Override
    public void destroy() {
        served.close();
        client.close();
    }
}
