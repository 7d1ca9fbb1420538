package io.sinkd.conductor;

import java.time.Duration;
import org.springframework.boot.autoconfigure.AutoConfiguration;
import org.springframework.boot.autoconfigure.condition.ConditionalOnProperty;
import org.springframework.context.annotation.Bean;
import org.springframework.core.env.Environment;

/**
 * Spring Boot 3 auto-configuration (listed in META-INF/spring/...AutoConfiguration.imports), active
 * with {@code conductor.sinkd.enabled=true}: replaces Conductor's EVENT task with
 * {@link SinkdEventTask} ({@link SinkdEventTaskPostProcessor}).
 */
@AutoConfiguration
@ConditionalOnProperty(name = "conductor.sinkd.enabled", havingValue = "true")
public class SinkdAutoConfiguration {
    /** How long sinkd's answer to "which queue types do you serve" is used before asking again. */
    public static final Duration QUEUE_TYPES_MAX_AGE = Duration.ofSeconds(30);

    /** Static: a BeanPostProcessor must exist before the beans it processes. */
    @Bean
    public static SinkdEventTaskPostProcessor sinkdEventTaskPostProcessor(Environment environment) {
        return new SinkdEventTaskPostProcessor(SinkdSettings.from(environment::getProperty));
    }
}
