package io.sinkd.conductor;

/**
 * A publish that sinkd did not accept. {@link #code()} is sinkd's rejection code (docs/PROTOCOL.md:
 * {@code invalid_sink}, {@code wal_full}, ...) or {@code unavailable} / {@code timeout} when sinkd
 * could not be reached or did not answer in time; {@link #retryable()} says whether the same
 * publish may succeed later (Conductor then retries the task).
 */
public class SinkdException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final String code;
    private final boolean retryable;

    public SinkdException(String code, boolean retryable, String message) {
        super(message);
        this.code = code;
        this.retryable = retryable;
    }

    public SinkdException(String code, boolean retryable, String message, Throwable cause) {
        super(message, cause);
        this.code = code;
        this.retryable = retryable;
    }

    public String code() {
        return code;
    }

    public boolean retryable() {
        return retryable;
    }
}
