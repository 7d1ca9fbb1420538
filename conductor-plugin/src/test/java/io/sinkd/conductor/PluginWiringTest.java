package io.sinkd.conductor;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.netflix.conductor.core.events.EventQueueProvider;
import com.netflix.conductor.core.events.EventQueues;
import com.netflix.conductor.core.events.queue.Message;
import com.netflix.conductor.core.execution.tasks.Event;
import com.netflix.conductor.core.execution.tasks.WorkflowSystemTask;
import com.netflix.conductor.core.utils.ParametersUtils;
import com.netflix.conductor.model.TaskModel;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;
import org.springframework.beans.factory.config.AutowireCapableBeanFactory;
import org.springframework.beans.factory.support.RootBeanDefinition;
import org.springframework.context.support.GenericApplicationContext;
import org.springframework.core.env.MapPropertySource;

/**
 * The plugin inside a real Spring ApplicationContext (Debian's Spring Framework 4.3; Conductor runs
 * Spring 6, whose BeanPostProcessor contract is the same): Conductor's beans as its configuration
 * declares them (the EVENT task bean named "EVENT", the providers, EventQueues, and a
 * SystemTaskRegistry that collects every WorkflowSystemTask bean by type as upstream's does), the
 * plugin's post-processor from SinkdAutoConfiguration's bean method.
 */
class PluginWiringTest {
    /** Conductor's SystemTaskRegistry: every WorkflowSystemTask bean by getTaskType(); a duplicate type fails start-up. */
    public static final class SystemTaskRegistry {
        final Map<String, WorkflowSystemTask> registry;

        public SystemTaskRegistry(Set<WorkflowSystemTask> tasks) {
            registry = tasks.stream().collect(Collectors.toMap(WorkflowSystemTask::getTaskType, Function.identity()));
        }
    }

    /** Conductor's ConductorCoreConfiguration: the providers by type, and EventQueues over them. */
    public static final class ConductorBeans {
        public static EventQueues eventQueues(List<EventQueueProvider> providers, ParametersUtils parametersUtils) {
            return new EventQueues(providers.stream().collect(Collectors.toMap(EventQueueProvider::getQueueType, Function.identity())), parametersUtils);
        }
    }

    private static GenericApplicationContext conductorWithPlugin(Map<String, Object> properties) {
        GenericApplicationContext context = new GenericApplicationContext();
        context.getEnvironment().getPropertySources().addFirst(new MapPropertySource("test", properties));
        ObjectMapper objectMapper = new ObjectMapper();
        context.getBeanFactory().registerSingleton("objectMapper", objectMapper);
        context.getBeanFactory().registerSingleton("parametersUtils", new ParametersUtils(objectMapper));
        RootBeanDefinition plugin = new RootBeanDefinition(SinkdAutoConfiguration.class);
        plugin.setFactoryMethodName("sinkdEventTaskPostProcessor");
        plugin.setAutowireMode(AutowireCapableBeanFactory.AUTOWIRE_CONSTRUCTOR);
        context.registerBeanDefinition("sinkdEventTaskPostProcessor", plugin);
        RootBeanDefinition sqs = new RootBeanDefinition(Conductor.Provider.class);
        sqs.getConstructorArgumentValues().addIndexedArgumentValue(0, "sqs");
        sqs.getConstructorArgumentValues().addIndexedArgumentValue(1, false);
        context.registerBeanDefinition("sqsEventQueueProvider", sqs);
        RootBeanDefinition queues = new RootBeanDefinition(ConductorBeans.class);
        queues.setFactoryMethodName("eventQueues");
        queues.setAutowireMode(AutowireCapableBeanFactory.AUTOWIRE_CONSTRUCTOR);
        context.registerBeanDefinition("eventQueues", queues);
        RootBeanDefinition event = new RootBeanDefinition(Event.class);
        event.setAutowireMode(AutowireCapableBeanFactory.AUTOWIRE_CONSTRUCTOR);
        context.registerBeanDefinition("EVENT", event);
        RootBeanDefinition registry = new RootBeanDefinition(SystemTaskRegistry.class);
        registry.setAutowireMode(AutowireCapableBeanFactory.AUTOWIRE_CONSTRUCTOR);
        context.registerBeanDefinition("systemTaskRegistry", registry);
        context.refresh();
        return context;
    }

    /**
     * The decider's EVENT task is the plugin's, wrapping Conductor's; providers and their queues
     * stay Conductor's own, so a message consumed from a Redis-style queue (id == receipt) and put
     * back by the event processor reaches its queue again; and an EVENT task run through the
     * registry lands in sinkd.
     */
    @Test
    void theEventTaskIsReplacedAndEverythingElseIsLeftAlone() throws Exception {
        try (SinkdProcess sinkd = new SinkdProcess();
             GenericApplicationContext context = conductorWithPlugin(Map.of("conductor.sinkd.socket", sinkd.socket.toString(),
                     "conductor.sinkd.queue-types", "file,sqs"))) {
            WorkflowSystemTask task = context.getBean(SystemTaskRegistry.class).registry.get("EVENT");
            assertTrue(task instanceof SinkdEventTask, "the registry holds " + task.getClass());
            assertTrue(((SinkdEventTask) task).conductors() instanceof Event);
            SinkdEventTaskPostProcessor plugin = context.getBean(SinkdEventTaskPostProcessor.class);
            assertEquals(Set.of("sqs"), plugin.conductorProviderTypes());

            Object provider = context.getBean("sqsEventQueueProvider");
            assertSame(Conductor.Provider.class, provider.getClass(), "the provider is Conductor's own, unwrapped");
            EventQueues eventQueues = context.getBean(EventQueues.class);
            Message consumed = new Message("msg-1", "{\"n\":1}", "msg-1");
            eventQueues.getQueue("sqs:orders").publish(List.of(consumed));
            assertEquals(List.of(consumed), ((Conductor.Provider) provider).queue("orders").published, "re-published into Conductor's queue, untouched");

            Conductor.EventRun run = Conductor.newEvent("file:wired");
            run.runWith(task);
            assertEquals(TaskModel.Status.COMPLETED, run.task().getStatus(), run.task().getReasonForIncompletion());
            assertEquals(1, sinkd.delivered("wired", 1).size());
        }
    }

    /** What the plugin logs at start, so an operator can see it is active and where it sends. */
    @Test
    void theStartLineNamesTheSocketAndTheTypes() {
        SinkdSettings fixed = SinkdSettings.from(Map.of("conductor.sinkd.socket", "/run/sinkd/ingest.sock", "conductor.sinkd.queue-types", " sqs, kafka ")::get);
        assertEquals("sinkd plugin active: EVENT tasks publish through sinkd at /run/sinkd/ingest.sock for the queue types [kafka, sqs], "
                + "other types through Conductor's own queues; each publish within 5000 ms over 4 connections", fixed.describe());
        SinkdSettings asking = SinkdSettings.from(key -> null);
        assertTrue(asking.describe().contains("the queue types sinkd serves (asked of sinkd now and every 30 s)"), asking.describe());
    }

    /** Defaults, and a value out of range stops the start naming the property, the value and what is allowed. */
    @Test
    void settingsAreCheckedWithAPreciseMessage() {
        SinkdSettings defaults = SinkdSettings.from(key -> null);
        assertEquals(new SinkdSettings(java.nio.file.Path.of("/run/sinkd/ingest.sock"), null, 4, Duration.ofSeconds(5)), defaults);
        Map<String, String> cases = Map.of(
                "conductor.sinkd.connections=0", "conductor.sinkd.connections: expected a whole number from 1 to 64, got '0'",
                "conductor.sinkd.connections=many", "conductor.sinkd.connections: expected a whole number from 1 to 64, got 'many'",
                "conductor.sinkd.publish-timeout=PT60S", "conductor.sinkd.publish-timeout: expected an ISO-8601 duration from PT0.1S to PT30S",
                "conductor.sinkd.publish-timeout=5s", "conductor.sinkd.publish-timeout: expected an ISO-8601 duration from PT0.1S to PT30S",
                "conductor.sinkd.socket= ", "conductor.sinkd.socket: expected the path of sinkd's ingest socket");
        cases.forEach((setting, message) -> {
            String[] kv = setting.split("=", 2);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> SinkdSettings.from(Map.of(kv[0], kv[1])::get), setting);
            assertTrue(e.getMessage().startsWith(message), setting + " -> " + e.getMessage());
        });
    }
}
