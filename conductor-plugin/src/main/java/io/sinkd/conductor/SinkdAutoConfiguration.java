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
    /** How long sinkd's answer to "which queue types do you serve" is used before asking again. */
    public static final Duration QUEUE_TYPES_MAX_AGE = Duration.ofSeconds(30);

    /** Static: a BeanPostProcessor must exist before the beans it processes. */
    @Bean
    public static SinkdBeanPostProcessor sinkdBeanPostProcessor(Environment environment) {
        Path socket = Path.of(environment.getProperty("conductor.sinkd.socket", "/run/sinkd/ingest.sock"));
        int connections = Integer.parseInt(environment.getProperty("conductor.sinkd.connections", "4"));
        Duration timeout = Duration.parse(environment.getProperty("conductor.sinkd.publish-timeout", "PT10S"));
        SinkdClient client = new SinkdClient(socket, connections, timeout);
        return new SinkdBeanPostProcessor(servedQueueTypes(environment.getProperty("conductor.sinkd.queue-types", ""), client), client);
    }

    /**
     * {@code conductor.sinkd.queue-types} when set (a comma-separated list: exactly those types);
     * absent or blank, the types sinkd's running configuration serves, asked of sinkd.
     */
    static ServedQueueTypes servedQueueTypes(String property, SinkdClient client) {
        if (property == null || property.isBlank()) {
            return ServedQueueTypes.askingSinkd(client, QUEUE_TYPES_MAX_AGE);
        }
        Set<String> types = Arrays.stream(property.split(","))
                .map(String::trim).filter(s -> !s.isEmpty()).collect(Collectors.toUnmodifiableSet());
        return ServedQueueTypes.fixed(types);
    }
}
