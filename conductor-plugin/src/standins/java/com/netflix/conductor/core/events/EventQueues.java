package com.netflix.conductor.core.events;

import com.netflix.conductor.core.events.queue.ObservableQueue;
import com.netflix.conductor.core.utils.ParametersUtils;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.springframework.lang.NonNull;

// Compile-only stand-in (never packaged); upstream: see conductor-plugin/STANDINS.md. getQueue
// splits at the first ':' and asks the provider of that type, as upstream.
public class EventQueues {
    public static final String EVENT_QUEUE_PROVIDERS_QUALIFIER = "EventQueueProviders";

    private final ParametersUtils parametersUtils;
    private final Map<String, EventQueueProvider> providers;

    public EventQueues(Map<String, EventQueueProvider> providers, ParametersUtils parametersUtils) {
        this.providers = providers;
        this.parametersUtils = parametersUtils;
    }

    public List<String> getProviders() {
        return providers.values().stream().map(p -> p.getClass().getName()).collect(Collectors.toList());
    }

    @NonNull
    public ObservableQueue getQueue(String eventType) {
        String event = parametersUtils.replace(eventType).toString();
        int index = event.indexOf(':');
        if (index == -1) {
            throw new IllegalArgumentException("Illegal event " + event);
        }
        String type = event.substring(0, index);
        EventQueueProvider provider = providers.get(type);
        if (provider == null) {
            throw new IllegalArgumentException("Unknown queue type " + type);
        }
        return provider.getQueue(event.substring(index + 1));
    }
}
