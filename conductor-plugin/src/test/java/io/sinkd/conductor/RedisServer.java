package io.sinkd.conductor;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A private redis-server (Debian's) on a free 127.0.0.1 port, started when the test says so (a
 * sink whose server is not up yet keeps its records in sinkd's WAL); read with redis-cli.
 */
final class RedisServer implements AutoCloseable {
    final int port;
    private Process process;

    RedisServer() throws IOException {
        port = LocalPorts.free();
    }

    void start() throws IOException, InterruptedException {
        process = new ProcessBuilder("redis-server", "--port", Integer.toString(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
                .redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        LocalPorts.awaitListening(process, port, 20, "redis-server (apt-get install redis-server; scripts/test installs it)");
    }

    /** The stream's entries' payload fields, waiting up to 30 s for at least {@code count}. */
    List<String> stream(String key, int count) throws IOException, InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (true) {
            Process cli = new ProcessBuilder("redis-cli", "-p", Integer.toString(port), "--raw", "XRANGE", key, "-", "+")
                    .redirectError(ProcessBuilder.Redirect.INHERIT).start();
            List<String> lines = new String(cli.getInputStream().readAllBytes(), StandardCharsets.UTF_8).lines()
                    .filter(l -> l.startsWith("{")).toList();
            cli.waitFor();
            if (lines.size() >= count || System.nanoTime() > deadline) {
                return lines;
            }
            Thread.sleep(100);
        }
    }

    @Override
    public void close() {
        if (process != null) {
            process.destroy();
            try {
                process.waitFor(10, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }
}
