package io.sinkd.conductor;

import java.nio.file.Path;
import java.time.Duration;
import java.time.format.DateTimeParseException;
import java.util.Arrays;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.UnaryOperator;
import java.util.stream.Collectors;

/**
 * The plugin's properties ({@code conductor.sinkd.*}), read once at start. A value out of range
 * stops Conductor's start with a message naming the property, the value and what is allowed.
 *
 * @param queueTypes the fixed types, or null: ask sinkd which it serves
 */
public record SinkdSettings(Path socket, Set<String> queueTypes, int connections, Duration publishTimeout) {
    public static final String PREFIX = "conductor.sinkd.";
    /** Conductor's workflow lock lease (conductor.app.lockLeaseTime) is 60 s: a publish must end well inside it. */
    public static final Duration MAX_PUBLISH_TIMEOUT = Duration.ofSeconds(30);
    public static final Duration MIN_PUBLISH_TIMEOUT = Duration.ofMillis(100);
    public static final int MAX_CONNECTIONS = 64;

    /** {@code property} looks a property up (null when unset), as Spring's Environment.getProperty. */
    public static SinkdSettings from(UnaryOperator<String> property) {
        String socket = or(property.apply(PREFIX + "socket"), "/run/sinkd/ingest.sock").trim();
        if (socket.isEmpty()) {
            throw invalid("socket", socket, "the path of sinkd's ingest socket (ingest.socket in sinkd.yaml)");
        }
        String types = property.apply(PREFIX + "queue-types");
        Set<String> fixed = null;
        if (types != null && !types.isBlank()) {
            fixed = Arrays.stream(types.split(",")).map(String::trim).filter(s -> !s.isEmpty()).collect(Collectors.toUnmodifiableSet());
        }
        String connections = or(property.apply(PREFIX + "connections"), "4").trim();
        int n;
        try {
            n = Integer.parseInt(connections);
        } catch (NumberFormatException e) {
            n = -1;
        }
        if (n < 1 || n > MAX_CONNECTIONS) {
            throw invalid("connections", connections, "a whole number from 1 to " + MAX_CONNECTIONS);
        }
        String timeout = or(property.apply(PREFIX + "publish-timeout"), "PT5S").trim();
        Duration d;
        try {
            d = Duration.parse(timeout);
        } catch (DateTimeParseException e) {
            d = null;
        }
        if (d == null || d.compareTo(MIN_PUBLISH_TIMEOUT) < 0 || d.compareTo(MAX_PUBLISH_TIMEOUT) > 0) {
            throw invalid("publish-timeout", timeout, "an ISO-8601 duration from PT0.1S to PT30S (the whole publish, retries included, "
                    + "must end well inside the workflow lock's 60 s lease)");
        }
        return new SinkdSettings(Path.of(socket), fixed, n, d);
    }

    private static String or(String value, String otherwise) {
        return value == null ? otherwise : value;
    }

    private static IllegalArgumentException invalid(String key, String value, String expected) {
        return new IllegalArgumentException(PREFIX + key + ": expected " + expected + ", got '" + value + "'");
    }

    /** The line the plugin logs at start, so an operator can see it is active and where it sends. */
    public String describe() {
        return "sinkd plugin active: EVENT tasks publish through sinkd at " + socket + " for "
                + (queueTypes == null ? "the queue types sinkd serves (asked of sinkd now and every 30 s)" : "the queue types " + new TreeSet<>(queueTypes))
                + ", other types through Conductor's own queues; each publish within " + publishTimeout.toMillis() + " ms over "
                + connections + (connections == 1 ? " connection" : " connections");
    }
}
