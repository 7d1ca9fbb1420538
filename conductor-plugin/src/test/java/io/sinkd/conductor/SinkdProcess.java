package io.sinkd.conductor;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

/** A real sinkd (the binary named by the sinkd.binary property) on a file sink, in a temporary directory. */
final class SinkdProcess implements AutoCloseable {
    final Path directory;
    final Path socket;
    private Process process;

    SinkdProcess() throws IOException, InterruptedException {
        this("");
    }

    /** {@code extraSinks}: more lines under {@code sinks:} (two-space indented). */
    SinkdProcess(String extraSinks) throws IOException, InterruptedException {
        this(extraSinks, true);
    }

    /** {@code start}: false to write the configuration only (start() later). */
    SinkdProcess(String extraSinks, boolean start) throws IOException, InterruptedException {
        directory = Files.createTempDirectory("sinkd-plugin-test-");
        socket = directory.resolve("ingest.sock");
        Files.writeString(directory.resolve("sinkd.yaml"), String.join("\n",
                "ingest: {socket: " + socket + "}",
                "control: {socket: " + directory.resolve("control.sock") + "}",
                "wal: {directory: " + directory.resolve("wal") + "}",
                "log: {level: warning, format: logfmt}",
                "sinks:",
                "  file: {directory: " + directory.resolve("out") + "}",
                extraSinks,
                ""));
        if (start) {
            start();
        }
    }

    void start() throws IOException, InterruptedException {
        String binary = System.getProperty("sinkd.binary");
        if (binary == null || !Files.isExecutable(Path.of(binary))) {
            throw new IllegalStateException("-Dsinkd.binary must name the sinkd executable (conductor-plugin/test passes it), got " + binary);
        }
        process = new ProcessBuilder(binary, "run", "-c", directory.resolve("sinkd.yaml").toString())
                .redirectErrorStream(true).redirectOutput(directory.resolve("sinkd.log").toFile()).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (true) {
            try (var channel = java.nio.channels.SocketChannel.open(java.net.StandardProtocolFamily.UNIX)) {
                channel.connect(java.net.UnixDomainSocketAddress.of(socket));
                return;
            } catch (IOException notYet) {
                if (!process.isAlive() || System.nanoTime() > deadline) {
                    throw new IllegalStateException("sinkd did not start: " + Files.readString(directory.resolve("sinkd.log")));
                }
                Thread.sleep(20);
            }
        }
    }

    /** SIGKILL, and waits for the process to end. */
    void kill() throws InterruptedException {
        process.destroyForcibly();
        process.waitFor(30, TimeUnit.SECONDS);
    }

    /** SIGSTOP (true) or SIGCONT (false). */
    void freeze(boolean stop) throws IOException, InterruptedException {
        int status = new ProcessBuilder("kill", stop ? "-STOP" : "-CONT", Long.toString(process.pid())).inheritIO().start().waitFor();
        if (status != 0) {
            throw new IOException("kill " + (stop ? "-STOP" : "-CONT") + " " + process.pid() + " exited " + status);
        }
    }

    /** Every record in sinkd's WAL ({@code sinkd wal dump}), one JSON line each. */
    List<String> walRecords() throws IOException, InterruptedException {
        Process dump = new ProcessBuilder(System.getProperty("sinkd.binary"), "wal", "dump", "-c", directory.resolve("sinkd.yaml").toString())
                .redirectError(ProcessBuilder.Redirect.INHERIT).start();
        String out = new String(dump.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        if (dump.waitFor() != 0) {
            throw new IOException("sinkd wal dump exited " + dump.exitValue());
        }
        return out.lines().toList();
    }

    void stop() {
        process.destroy();
        try {
            process.waitFor(30, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            process.destroyForcibly();
        }
    }

    /** The lines the file sink wrote for file:NAME, waiting up to 10 s for at least {@code count}. */
    List<String> delivered(String name, int count) throws IOException, InterruptedException {
        return delivered(name, count, 10);
    }

    /** The same, waiting up to {@code seconds}. */
    List<String> delivered(String name, int count, int seconds) throws IOException, InterruptedException {
        Path file = directory.resolve("out").resolve(name + ".ndjson");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (true) {
            List<String> lines = Files.exists(file) ? Files.readAllLines(file) : List.of();
            if (lines.size() >= count || System.nanoTime() > deadline) {
                return lines;
            }
            Thread.sleep(20);
        }
    }

    @Override
    public void close() {
        if (process != null && process.isAlive()) {
            stop();
        }
        try (var paths = Files.walk(directory)) {
            paths.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException ignored) {
            // a temporary directory left behind
        }
    }
}
