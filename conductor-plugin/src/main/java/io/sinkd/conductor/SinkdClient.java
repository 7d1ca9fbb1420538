package io.sinkd.conductor;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Collectors;

/**
 * sinkd's ingest protocol (docs/PROTOCOL.md) on the JDK alone: newline-delimited JSON over a
 * Unix-domain socket, pipelined, one response per request in request order.
 *
 * <p>Thread-safe: any number of threads publish at once over a small pool of connections, each
 * pipelining its requests; a connection that fails is replaced on the next publish (sinkd
 * restarted: with socket activation the socket stays, so the next connect succeeds as soon as it
 * runs again). A publish waits at most {@code timeout} for its answer.
 */
public final class SinkdClient implements AutoCloseable {
    /** What sinkd answered for an accepted record. */
    public record Result(String status, long seq) {
        public boolean duplicate() {
            return status.equals("duplicate");
        }
    }

    /** The record's context fields (any may be null). */
    public record Context(String workflowInstanceId, String workflowType, String correlationId, String taskRefName) {
        public static final Context NONE = new Context(null, null, null, null);
    }

    private final Path socket;
    private final Duration timeout;
    private final Connection[] pool;
    private final AtomicInteger next = new AtomicInteger();
    private volatile boolean closed;

    public SinkdClient(Path socket, int connections, Duration timeout) {
        if (connections < 1) {
            throw new IllegalArgumentException("connections must be at least 1, got " + connections);
        }
        this.socket = socket;
        this.timeout = timeout;
        this.pool = new Connection[connections];
        for (int i = 0; i < connections; i++) {
            pool[i] = new Connection();
        }
    }

    /**
     * Publishes one record in the expanded form ({@code queueType}, {@code queueURI}: what
     * Conductor's provider was asked for), {@code payloadJson} embedded as raw JSON. Returns once
     * sinkd made it durable ({@code accepted}) or knew it already ({@code duplicate}); throws
     * {@link SinkdException} otherwise.
     */
    public Result publish(String id, String queueType, String queueURI, String payloadJson, Context context) {
        StringBuilder line = new StringBuilder(payloadJson.length() + 160);
        line.append("{\"id\":");
        Json.string(line, id);
        line.append(",\"queueType\":");
        Json.string(line, queueType);
        line.append(",\"queueURI\":");
        Json.string(line, queueURI);
        field(line, "workflowInstanceId", context.workflowInstanceId());
        field(line, "workflowType", context.workflowType());
        field(line, "correlationId", context.correlationId());
        field(line, "taskRefName", context.taskRefName());
        line.append(",\"payload\":").append(payloadJson.isBlank() ? "null" : payloadJson).append("}\n");
        String response = exchange(line.toString().getBytes(StandardCharsets.UTF_8));
        return interpret(id, response);
    }

    /**
     * The queue types sinkd's running configuration serves ({@code {"query":"queueTypes"}},
     * docs/PROTOCOL.md): Conductor's types whose sink family sinkd has. Throws
     * {@link SinkdException} when sinkd cannot be asked.
     */
    public Set<String> queueTypes() {
        return interpretQueueTypes(exchange("{\"query\":\"queueTypes\"}\n".getBytes(StandardCharsets.UTF_8)));
    }

    static Set<String> interpretQueueTypes(String response) {
        Map<String, String> fields;
        try {
            fields = Json.flatObject(response);
        } catch (IllegalArgumentException e) {
            throw new SinkdException("internal", true, "sinkd sent an answer this client cannot read (" + e.getMessage() + "): " + response);
        }
        String types = fields.get("queueTypes");
        if (!"answer".equals(fields.get("status")) || types == null) {
            // An older sinkd answers the query as a record missing its fields.
            throw new SinkdException(fields.getOrDefault("code", "internal"), false,
                    "sinkd did not answer the queueTypes query (an older sinkd? set conductor.sinkd.queue-types): " + response);
        }
        return Arrays.stream(types.split(",")).filter(t -> !t.isEmpty()).collect(Collectors.toUnmodifiableSet());
    }

    /** Sends one request line on a pooled connection and returns sinkd's answer line. */
    private String exchange(byte[] request) {
        if (closed) {
            throw new SinkdException("unavailable", true, "the sinkd client is closed");
        }
        Connection c = pool[Math.floorMod(next.getAndIncrement(), pool.length)];
        CompletableFuture<String> answer = c.send(request);
        try {
            return answer.get(timeout.toMillis(), TimeUnit.MILLISECONDS);
        } catch (TimeoutException e) {
            // Its outcome is unknown (sinkd may still accept it; a retry of the task is then
            // answered duplicate): the connection is given up so that later publishes do not
            // queue behind an answer that may never come.
            c.abandon(answer);
            throw new SinkdException("timeout", true, "sinkd at " + socket + " did not answer within " + timeout.toMillis() + " ms");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new SinkdException("unavailable", true, "interrupted while waiting for sinkd", e);
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            if (cause instanceof SinkdException s) {
                throw s;
            }
            throw new SinkdException("unavailable", true, "sinkd at " + socket + ": " + cause.getMessage(), cause);
        }
    }

    static Result interpret(String id, String response) {
        Map<String, String> fields;
        try {
            fields = Json.flatObject(response);
        } catch (IllegalArgumentException e) {
            throw new SinkdException("internal", true, "sinkd sent an answer this client cannot read (" + e.getMessage() + "): " + response);
        }
        String status = fields.getOrDefault("status", "");
        switch (status) {
            case "accepted", "duplicate" -> {
                String seq = fields.get("seq");
                return new Result(status, seq == null ? -1 : Long.parseLong(seq));
            }
            case "rejected" -> {
                String code = fields.getOrDefault("code", "unknown");
                boolean retryable = "true".equals(fields.get("retryable"));
                throw new SinkdException(code == null ? "unknown" : code, retryable,
                        "sinkd rejected message " + id + " (" + code + (retryable ? ", retryable" : "") + "): " + fields.get("error"));
            }
            default -> throw new SinkdException("internal", true, "sinkd answered an unknown status for message " + id + ": " + response);
        }
    }

    private static void field(StringBuilder line, String name, String value) {
        if (value == null) {
            return;
        }
        line.append(",\"").append(name).append("\":");
        Json.string(line, value);
    }

    @Override
    public void close() {
        closed = true;
        for (Connection c : pool) {
            c.shutdown(new SinkdException("unavailable", true, "the sinkd client is closed"));
        }
    }

    /**
     * One socket: writes under a lock (a request's bytes stay together and its future joins the
     * queue in write order), a reader thread completes the futures in order.
     */
    private final class Connection {
        private SocketChannel channel;
        private final ArrayDeque<CompletableFuture<String>> waiting = new ArrayDeque<>();

        synchronized CompletableFuture<String> send(byte[] request) {
            CompletableFuture<String> answer = new CompletableFuture<>();
            try {
                if (channel == null || !channel.isOpen()) {
                    connect();
                }
                waiting.addLast(answer);
                ByteBuffer buffer = ByteBuffer.wrap(request);
                while (buffer.hasRemaining()) {
                    channel.write(buffer);
                }
            } catch (IOException e) {
                SinkdException failure = new SinkdException("unavailable", true, "cannot reach sinkd at " + socket + ": " + e.getMessage(), e);
                drop(failure);
                answer.completeExceptionally(failure);
            }
            return answer;
        }

        private void connect() throws IOException {
            SocketChannel made = SocketChannel.open(StandardProtocolFamily.UNIX);
            try {
                made.connect(UnixDomainSocketAddress.of(socket));
            } catch (IOException e) {
                made.close();
                throw e;
            }
            channel = made;
            Thread reader = new Thread(() -> read(made), "sinkd-client-reader");
            reader.setDaemon(true);
            reader.start();
        }

        private void read(SocketChannel from) {
            ByteBuffer buffer = ByteBuffer.allocate(64 << 10);
            java.io.ByteArrayOutputStream line = new java.io.ByteArrayOutputStream();
            try {
                while (true) {
                    buffer.clear();
                    int n = from.read(buffer);
                    if (n < 0) {
                        break;
                    }
                    for (int i = 0; i < n; i++) {
                        byte b = buffer.get(i);
                        if (b != '\n') {
                            line.write(b);
                            continue;
                        }
                        String text = line.toString(StandardCharsets.UTF_8);
                        line.reset();
                        CompletableFuture<String> first;
                        synchronized (this) {
                            first = waiting.pollFirst();
                        }
                        if (first != null) {
                            first.complete(text);
                        }
                    }
                }
            } catch (IOException e) {
                // the connection failed: every waiting publish fails below
            }
            synchronized (this) {
                if (channel == from) {
                    drop(new SinkdException("unavailable", true, "sinkd at " + socket + " closed the connection"));
                }
            }
        }

        /** Closes the socket; every publish still waiting fails with {@code failure}. */
        private void drop(SinkdException failure) {
            if (channel != null) {
                try {
                    channel.close();
                } catch (IOException ignored) {
                    // closing a broken socket
                }
                channel = null;
            }
            CompletableFuture<String> f;
            while ((f = waiting.pollFirst()) != null) {
                f.completeExceptionally(failure);
            }
        }

        /** Gives the connection up if {@code answer} is still waiting on it. */
        synchronized void abandon(CompletableFuture<String> answer) {
            if (waiting.contains(answer)) {
                drop(new SinkdException("timeout", true, "an earlier publish on this connection got no answer in time"));
            }
        }

        synchronized void shutdown(SinkdException failure) {
            drop(failure);
        }
    }
}
