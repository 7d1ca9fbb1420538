package io.sinkd.conductor;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A private PostgreSQL (Debian's) on a free 127.0.0.1 port with Conductor's queue tables, run as the
 * postgres user (tests run as root, as CI does); read with psql.
 */
final class PostgresServer implements AutoCloseable {
    final Path directory;
    final int port;
    private final Path bin;
    private final Process process;

    PostgresServer() throws IOException, InterruptedException {
        try (var versions = Files.list(Path.of("/usr/lib/postgresql"))) {
            bin = versions.sorted(Comparator.reverseOrder()).findFirst().orElseThrow(() -> new IOException("no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)")).resolve("bin");
        }
        directory = Files.createTempDirectory("sinkd-plugin-pg-");
        run("chown", "postgres:postgres", directory.toString());
        asPostgres(bin.resolve("initdb").toString(), "-D", directory.resolve("data").toString(), "-U", "conductor", "--auth=trust", "--no-sync");
        try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            port = s.getLocalPort();
        }
        process = new ProcessBuilder("runuser", "-u", "postgres", "--", bin.resolve("postgres").toString(), "-D", directory.resolve("data").toString(),
                "-p", Integer.toString(port), "-k", directory.toString(), "-c", "listen_addresses=127.0.0.1")
                .redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (true) {
            try (Socket probe = new Socket()) {
                probe.connect(new InetSocketAddress("127.0.0.1", port), 200);
                if (psql("postgres", "SELECT 1").equals("1")) {
                    break;
                }
            } catch (IOException | IllegalStateException notYet) {
                if (!process.isAlive() || System.nanoTime() > deadline) {
                    throw new IOException("postgres did not start on port " + port);
                }
                Thread.sleep(50);
            }
        }
        psql("postgres", "CREATE DATABASE conductor");
        psql("conductor", "CREATE TABLE queue (queue_name varchar(255) PRIMARY KEY, created_on timestamp default current_timestamp)");
        psql("conductor", "CREATE TABLE queue_message (created_on timestamp not null default current_timestamp, deliver_on timestamp default current_timestamp, "
                + "queue_name varchar(255) not null, message_id varchar(255) not null, priority integer default 0, popped boolean default false, "
                + "offset_time_seconds bigint, payload text, PRIMARY KEY (queue_name, message_id))");
    }

    String url() {
        return "postgres://conductor@127.0.0.1:" + port + "/conductor";
    }

    /** One statement's rows, one per line, columns joined by '|'. */
    String psql(String database, String sql) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(bin.resolve("psql").toString(), "-h", "127.0.0.1", "-p", Integer.toString(port), "-U", "conductor",
                "-d", database, "-At", "-c", sql).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes()).trim();
        if (p.waitFor() != 0) {
            throw new IllegalStateException("psql: " + out);
        }
        return out;
    }

    private static void run(String... command) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        if (p.waitFor() != 0) {
            throw new IOException(String.join(" ", command) + ": " + out);
        }
    }

    private static void asPostgres(String... command) throws IOException, InterruptedException {
        List<String> full = new ArrayList<>(List.of("runuser", "-u", "postgres", "--"));
        full.addAll(Arrays.asList(command));
        run(full.toArray(new String[0]));
    }

    @Override
    public void close() throws IOException {
        process.destroy();
        try {
            process.waitFor(30, TimeUnit.SECONDS);
            run("rm", "-rf", directory.toString());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
