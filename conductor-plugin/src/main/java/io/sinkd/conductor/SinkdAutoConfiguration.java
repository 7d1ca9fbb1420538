package io.sinkd.conductor;

import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.Set;
import java.util.stream.Collectors;
import org.springframework.boot.autoconfigure.AutoConfiguration;
import org.springframework.boot.autoconfigure.condition.ConditionalOnProperty;
import org.springframework.context.annotation.Bean;
import org.springframework.core.env.Environment;

/**
 * Spring Boot 3 auto-configuration (listed in META-INF/spring/...AutoConfiguration.imports), active
 * with {@code conductor.sinkd.enabled=true}.
 */
@AutoConfiguration
@ConditionalOnProperty(name = "conductor.sinkd.enabled", havingValue = "true")
public class SinkdAutoConfiguration {
    /** Every queue type a sinkd family serves. */
    public static final String DEFAULT_QUEUE_TYPES = "sqs,amqp,amqp_queue,amqp_exchange,nats,nats_stream,jsm,kafka,conductor";

    /** Static: a BeanPostProcessor must exist before the beans it processes. */
    @Bean
    public static SinkdBeanPostProcessor sinkdBeanPostProcessor(Environment environment) {
        Path socket = Path.of(environment.getProperty("conductor.sinkd.socket", "/run/sinkd/ingest.sock"));
        int connections = Integer.parseInt(environment.getProperty("conductor.sinkd.connections", "4"));
        Duration timeout = Duration.parse(environment.getProperty("conductor.sinkd.publish-timeout", "PT10S"));
        Set<String> types = Arrays.stream(environment.getProperty("conductor.sinkd.queue-types", DEFAULT_QUEUE_TYPES).split(","))
                .map(String::trim).filter(s -> !s.isEmpty()).collect(Collectors.toUnmodifiableSet());
        return new SinkdBeanPostProcessor(types, new SinkdClient(socket, connections, timeout));
    }
}
