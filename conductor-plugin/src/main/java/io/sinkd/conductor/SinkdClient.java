package io.sinkd.conductor;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedSelectorException;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.locks.LockSupport;
import java.util.stream.Collectors;

/**
 * sinkd's ingest protocol (docs/PROTOCOL.md) on the JDK alone: newline-delimited JSON over a
 * Unix-domain socket, pipelined, one answer per request in request order.
 *
 * <p>Every publish is bounded by one deadline covering connecting, writing, the answer and the
 * retries: the calling thread (a Conductor decider, holding the workflow lock) only ever waits on
 * its own answer, never on a socket. One I/O thread owns the connections, all non-blocking: it
 * writes what the sockets take, reads answers and hands each to its request. A caller whose
 * deadline passes just leaves; its request stays in line on its connection (its answer, when it
 * comes, is dropped) so that the requests behind it keep theirs, or is dropped unsent if not one
 * byte of it was written. A connection on which sinkd has neither read nor answered anything for
 * a whole deadline while it owed something is closed (sinkd stopped, stuck, or not reading):
 * its requests fail as retryable and their callers, if still within their deadline, try again
 * on a new connection.
 *
 * <p>Retryable outcomes (no socket, a refused or reset connection, an answer that did not come,
 * {@code shutting_down}, {@code wal_full}, ...: the {@code retryable} flag sinkd sends) are tried
 * again within the deadline with the same id and jittered backoff ({@link RetryPolicy}), so a
 * sinkd restart or upgrade is invisible to the publisher; sinkd answers a second copy of a record
 * it had stored {@code duplicate}. Only a non-retryable refusal or the deadline throws.
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

    /** An answer line longer than this is not sinkd's: the connection is closed. */
    static final int MAX_ANSWER_BYTES = 64 << 10;

    private final Path socket;
    private final Duration deadline;
    private final RetryPolicy retry;
    private final Selector selector;
    private final Connection[] pool;
    private final ConcurrentLinkedQueue<Request> submitted = new ConcurrentLinkedQueue<>();
    private final Thread io;
    private volatile boolean closed;
    private int nextConnection;

    /** {@code deadline}: how long one publish may take in all (connect, write, answer, retries). */
    public SinkdClient(Path socket, int connections, Duration deadline) {
        this(socket, connections, deadline, RetryPolicy.DEFAULT);
    }

    public SinkdClient(Path socket, int connections, Duration deadline, RetryPolicy retry) {
        if (connections < 1) {
            throw new IllegalArgumentException("connections must be at least 1, got " + connections);
        }
        if (deadline.isNegative() || deadline.isZero()) {
            throw new IllegalArgumentException("the publish deadline must be positive, got " + deadline);
        }
        this.socket = socket;
        this.deadline = deadline;
        this.retry = retry;
        this.pool = new Connection[connections];
        for (int i = 0; i < connections; i++) {
            pool[i] = new Connection();
        }
        try {
            this.selector = Selector.open();
        } catch (IOException e) {
            throw new IllegalStateException("cannot open a selector for the sinkd client: " + e.getMessage(), e);
        }
        io = new Thread(this::run, "sinkd-client-io");
        io.setDaemon(true);
        io.start();
    }

    public Path socket() {
        return socket;
    }

    public Duration deadline() {
        return deadline;
    }

    /**
     * Publishes one record in the expanded form ({@code queueType}, {@code queueURI}),
     * {@code payloadJson} embedded as raw JSON, within this client's deadline. Returns once sinkd
     * made it durable ({@code accepted}) or knew it already ({@code duplicate}); throws
     * {@link SinkdException} for a non-retryable refusal or when the deadline passed.
     */
    public Result publish(String id, String queueType, String queueURI, String payloadJson, Context context) {
        return publish(id, queueType, queueURI, payloadJson, context, System.nanoTime() + deadline.toNanos());
    }

    /** The same with an explicit deadline ({@link System#nanoTime()} based). */
    public Result publish(String id, String queueType, String queueURI, String payloadJson, Context context, long deadlineNanos) {
        byte[] line = encode(id, queueType, queueURI, payloadJson, context);
        long started = System.nanoTime();
        SinkdException last = null;
        for (int attempt = 0; ; attempt++) {
            if (attempt > 0) {
                long pause = retry.pauseNanos(attempt, ThreadLocalRandom.current().nextDouble());
                if (System.nanoTime() + pause >= deadlineNanos) {
                    throw gaveUp(id, queueType, queueURI, attempt, started, last);
                }
                LockSupport.parkNanos(pause);
                if (Thread.interrupted()) {
                    Thread.currentThread().interrupt();
                    throw new SinkdException("interrupted", false, "interrupted while publishing message " + id + " through sinkd (last: " + last.getMessage() + ")");
                }
            }
            try {
                return interpret(id, exchange(line, deadlineNanos));
            } catch (SinkdException e) {
                if (!e.retryable()) {
                    throw e;
                }
                last = e;
            }
            if (System.nanoTime() >= deadlineNanos) {
                throw gaveUp(id, queueType, queueURI, attempt + 1, started, last);
            }
        }
    }

    private SinkdException gaveUp(String id, String queueType, String queueURI, int attempts, long started, SinkdException last) {
        long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - started);
        String unknown = "timeout".equals(last.code())
                ? " Whether sinkd stored it is unknown (its answer did not come): a later publish with the same id is answered 'duplicate' if it did."
                : "";
        return new SinkdException(last.code(), true, "sinkd at " + socket + " did not take message " + id + " for "
                + queueType + ":" + queueURI + " in " + ms + " ms (" + attempts + (attempts == 1 ? " attempt" : " attempts")
                + "; last: " + last.getMessage() + ")." + unknown
                + " Check that sinkd runs (systemctl status sinkd; journalctl -u sinkd) and that conductor.sinkd.socket names its ingest socket.", last);
    }

    static byte[] encode(String id, String queueType, String queueURI, String payloadJson, Context context) {
        StringBuilder line = new StringBuilder(payloadJson.length() + 200);
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
        return line.toString().getBytes(StandardCharsets.UTF_8);
    }

    /**
     * The queue types sinkd's running configuration serves ({@code {"query":"queueTypes"}},
     * docs/PROTOCOL.md): Conductor's types whose sink family sinkd has. One attempt within this
     * client's deadline; throws {@link SinkdException} when sinkd cannot be asked.
     */
    public Set<String> queueTypes() {
        return interpretQueueTypes(exchange("{\"query\":\"queueTypes\"}\n".getBytes(StandardCharsets.UTF_8), System.nanoTime() + deadline.toNanos()));
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

    /**
     * A context field, left out when sinkd would refuse it (docs/PROTOCOL.md: no control
     * characters, at most 4096 bytes): the context only enriches the message, and a workflow
     * whose correlationId holds a newline must not fail its EVENT task for it.
     */
    private static void field(StringBuilder line, String name, String value) {
        if (value == null || !usableContext(value)) {
            return;
        }
        line.append(",\"").append(name).append("\":");
        Json.string(line, value);
    }

    static boolean usableContext(String value) {
        if (value.length() > 4096 || value.getBytes(StandardCharsets.UTF_8).length > 4096) {
            return false;
        }
        for (int i = 0; i < value.length(); i++) {
            char c = value.charAt(i);
            if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) {
                return false;
            }
        }
        return true;
    }

    /** Hands one request line to the I/O thread and waits for its answer until {@code deadlineNanos}. */
    private String exchange(byte[] bytes, long deadlineNanos) {
        if (closed) {
            throw new SinkdException("unavailable", false, "the sinkd client is closed");
        }
        Request request = new Request(bytes);
        submitted.add(request);
        selector.wakeup();
        try {
            return request.answer.get(Math.max(0, deadlineNanos - System.nanoTime()), TimeUnit.NANOSECONDS);
        } catch (TimeoutException e) {
            request.abandoned = true;
            throw new SinkdException("timeout", true, "no answer from sinkd at " + socket + " in time");
        } catch (InterruptedException e) {
            request.abandoned = true;
            Thread.currentThread().interrupt();
            throw new SinkdException("interrupted", false, "interrupted while waiting for sinkd at " + socket);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof SinkdException s) {
                throw s;
            }
            throw new SinkdException("unavailable", true, "sinkd at " + socket + ": " + e.getCause(), e.getCause());
        }
    }

    @Override
    public void close() {
        closed = true;
        selector.wakeup();
        try {
            io.join(TimeUnit.SECONDS.toMillis(5));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** One request line; its bytes are written by the I/O thread alone. */
    private static final class Request {
        final ByteBuffer bytes;
        final CompletableFuture<String> answer = new CompletableFuture<>();
        /** Its caller left (deadline): dropped if not yet begun, its answer ignored otherwise. */
        volatile boolean abandoned;

        Request(byte[] bytes) {
            this.bytes = ByteBuffer.wrap(bytes);
        }

        boolean begun() {
            return bytes.position() > 0;
        }
    }

    // ---- The I/O thread: every field below is touched by it alone. ----

    private void run() {
        ByteBuffer readBuffer = ByteBuffer.allocate(64 << 10);
        while (!closed) {
            boolean busy = false;
            for (Connection c : pool) {
                busy |= c.owes();
            }
            try {
                // Asleep while idle; while a connection owes answers, awake often enough to notice it stalling.
                selector.select(busy ? 50 : 0);
            } catch (IOException | ClosedSelectorException e) {
                break;
            }
            try {
                step(readBuffer);
            } catch (RuntimeException e) {
                // A defect here must not leave every later publish waiting on a dead thread: the
                // connections are dropped (their callers retry) and the loop goes on.
                for (Connection c : pool) {
                    c.fail(new SinkdException("internal", true, "the sinkd client's I/O failed: " + e, e));
                }
            }
        }
        SinkdException shut = new SinkdException("unavailable", false, "the sinkd client is closed");
        for (Connection c : pool) {
            c.fail(shut);
        }
        Request request;
        while ((request = submitted.poll()) != null) {
            request.answer.completeExceptionally(shut);
        }
        try {
            selector.close();
        } catch (IOException ignored) {
            // closing
        }
    }

    /** One round: the sockets that are ready, then new requests, then stalled connections. */
    private void step(ByteBuffer readBuffer) {
        long now = System.nanoTime();
        for (SelectionKey key : selector.selectedKeys()) {
            Connection c = (Connection) key.attachment();
            try {
                if (key.isValid() && key.isConnectable()) {
                    c.connected(now);
                }
                if (key.isValid() && key.isReadable()) {
                    c.read(now, readBuffer);
                }
                if (key.isValid() && key.isWritable()) {
                    c.flush(now);
                }
            } catch (IOException e) {
                c.fail(new SinkdException("unavailable", true, "the connection to sinkd at " + socket + " failed: " + e.getMessage(), e));
            }
        }
        selector.selectedKeys().clear();
        Request request;
        while ((request = submitted.poll()) != null) {
            assign(request, now);
        }
        for (Connection c : pool) {
            c.checkStalled(now);
        }
    }

    /** To the connection owing the fewest answers (a stuck one owes many and is left alone). */
    private void assign(Request request, long now) {
        if (request.abandoned) {
            request.answer.completeExceptionally(new SinkdException("timeout", true, "not sent: its deadline passed first"));
            return;
        }
        Connection best = null;
        for (int i = 0; i < pool.length; i++) {
            Connection c = pool[(nextConnection + i) % pool.length];
            if (best == null || c.load() < best.load()) {
                best = c;
            }
        }
        nextConnection = (nextConnection + 1) % pool.length;
        best.enqueue(request, now);
    }

    private final class Connection {
        private SocketChannel channel;
        private SelectionKey key;
        private boolean connecting;
        /** The head may be partly written; the rest not begun. */
        private final ArrayDeque<Request> unwritten = new ArrayDeque<>();
        /** Written whole, in write order: sinkd answers them in this order. */
        private final ArrayDeque<Request> unanswered = new ArrayDeque<>();
        private byte[] line = new byte[256];
        private int lineLength;
        /** The last time sinkd read or answered something, or this connection started owing. */
        private long lastProgress;

        int load() {
            return unwritten.size() + unanswered.size();
        }

        boolean owes() {
            return channel != null && load() > 0;
        }

        void enqueue(Request request, long now) {
            if (channel == null) {
                try {
                    open();
                } catch (IOException e) {
                    request.answer.completeExceptionally(new SinkdException("unavailable", true, "cannot connect to sinkd at " + socket + ": " + e.getMessage(), e));
                    return;
                }
            }
            if (load() == 0) {
                lastProgress = now;
            }
            unwritten.addLast(request);
            try {
                flush(now);
            } catch (IOException e) {
                fail(new SinkdException("unavailable", true, "cannot write to sinkd at " + socket + ": " + e.getMessage(), e));
            }
        }

        private void open() throws IOException {
            SocketChannel made = SocketChannel.open(StandardProtocolFamily.UNIX);
            try {
                made.configureBlocking(false);
                connecting = !made.connect(UnixDomainSocketAddress.of(socket));
                key = made.register(selector, connecting ? SelectionKey.OP_CONNECT : SelectionKey.OP_READ, this);
            } catch (IOException e) {
                made.close();
                throw e;
            }
            channel = made;
            lineLength = 0;
        }

        void connected(long now) throws IOException {
            if (channel.finishConnect()) {
                connecting = false;
                lastProgress = now;
                flush(now);
            }
        }

        /** Writes what the socket takes, in order; drops requests abandoned before their first byte. */
        void flush(long now) throws IOException {
            while (!unwritten.isEmpty()) {
                Request head = unwritten.peekFirst();
                if (!head.begun() && head.abandoned) {
                    unwritten.pollFirst();
                    head.answer.completeExceptionally(new SinkdException("timeout", true, "not sent: its deadline passed first"));
                    continue;
                }
                if (connecting) {
                    break;
                }
                if (channel.write(head.bytes) > 0) {
                    lastProgress = now;
                }
                if (head.bytes.hasRemaining()) {
                    break;
                }
                unanswered.addLast(unwritten.pollFirst());
            }
            if (channel != null && !connecting) {
                key.interestOps(SelectionKey.OP_READ | (unwritten.isEmpty() ? 0 : SelectionKey.OP_WRITE));
            }
        }

        void read(long now, ByteBuffer buffer) throws IOException {
            buffer.clear();
            int n = channel.read(buffer);
            if (n < 0) {
                fail(new SinkdException("unavailable", true, "sinkd at " + socket + " closed the connection"));
                return;
            }
            if (n > 0) {
                lastProgress = now;
            }
            for (int i = 0; i < n; i++) {
                byte b = buffer.get(i);
                if (b != '\n') {
                    if (lineLength == MAX_ANSWER_BYTES) {
                        fail(new SinkdException("internal", true, "sinkd at " + socket + " sent an answer longer than " + MAX_ANSWER_BYTES + " bytes"));
                        return;
                    }
                    if (lineLength == line.length) {
                        line = Arrays.copyOf(line, Math.min(MAX_ANSWER_BYTES, line.length * 2));
                    }
                    line[lineLength++] = b;
                    continue;
                }
                String text = new String(line, 0, lineLength, StandardCharsets.UTF_8);
                lineLength = 0;
                Request first = unanswered.pollFirst();
                if (first == null) {
                    fail(new SinkdException("internal", true, "sinkd at " + socket + " answered a request that was not sent: " + text));
                    return;
                }
                first.answer.complete(text);
            }
        }

        /** Closes a connection that owes something while sinkd took and answered nothing for a whole deadline. */
        void checkStalled(long now) {
            if (owes() && now - lastProgress > deadline.toNanos()) {
                fail(new SinkdException("timeout", true, "sinkd at " + socket + " neither read nor answered for "
                        + deadline.toMillis() + " ms; the connection was closed"));
            } else if (channel != null) {
                try {
                    flush(now);
                } catch (IOException e) {
                    fail(new SinkdException("unavailable", true, "cannot write to sinkd at " + socket + ": " + e.getMessage(), e));
                }
            }
        }

        /** Closes the socket; every request on it fails with {@code failure}. */
        void fail(SinkdException failure) {
            if (channel != null) {
                key.cancel();
                try {
                    channel.close();
                } catch (IOException ignored) {
                    // closing a broken socket
                }
                channel = null;
                key = null;
            }
            connecting = false;
            lineLength = 0;
            Request r;
            while ((r = unwritten.pollFirst()) != null) {
                r.answer.completeExceptionally(failure);
            }
            while ((r = unanswered.pollFirst()) != null) {
                r.answer.completeExceptionally(failure);
            }
        }
    }
}
