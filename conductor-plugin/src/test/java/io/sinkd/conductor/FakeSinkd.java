package io.sinkd.conductor;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

/**
 * A listener at a Unix socket that plays a sinkd gone wrong: one that accepts and never reads,
 * one that never accepts, one that answers a given request late. Real sockets; only the peer is
 * scripted (a real sinkd cannot be made to misbehave on cue).
 */
final class FakeSinkd implements AutoCloseable {
    final Path socket;
    private final ServerSocketChannel server;
    private final List<SocketChannel> accepted = new CopyOnWriteArrayList<>();

    private FakeSinkd(Path socket, int backlog) throws IOException {
        this.socket = socket;
        server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        server.bind(UnixDomainSocketAddress.of(socket), backlog);
    }

    private static Path freshSocket() throws IOException {
        return Files.createTempDirectory("sinkd-plugin-fake-").resolve("ingest.sock");
    }

    /** Accepts every connection and never reads from it (nor answers). */
    static FakeSinkd acceptingNeverReading() throws IOException {
        return acceptingNeverReading(freshSocket());
    }

    static FakeSinkd acceptingNeverReading(Path socket) throws IOException {
        FakeSinkd fake = new FakeSinkd(socket, 50);
        fake.acceptEach(c -> {});
        return fake;
    }

    /** Never accepts: connections wait in a backlog of one until the kernel refuses more. */
    static FakeSinkd neverAccepting() throws IOException {
        return new FakeSinkd(freshSocket(), 1);
    }

    /** Answers each request {@code accepted}, in order, the one with id {@code slowId} after {@code millis}. */
    static FakeSinkd answeringSlowly(String slowId, long millis) throws IOException {
        FakeSinkd fake = new FakeSinkd(freshSocket(), 50);
        fake.acceptEach(c -> {
            Thread t = new Thread(() -> answer(c, slowId, millis), "fake-sinkd-connection");
            t.setDaemon(true);
            t.start();
        });
        return fake;
    }

    private static void answer(SocketChannel c, String slowId, long millis) {
        ByteBuffer in = ByteBuffer.allocate(1 << 16);
        StringBuilder line = new StringBuilder();
        long seq = 0;
        try {
            while (c.read(in.clear()) > 0) {
                for (int i = 0; i < in.position(); i++) {
                    char ch = (char) in.get(i);
                    if (ch != '\n') {
                        line.append(ch);
                        continue;
                    }
                    String request = line.toString();
                    line.setLength(0);
                    if (request.contains("\"id\":\"" + slowId + "\"")) {
                        Thread.sleep(millis);
                    }
                    String id = request.replaceAll("^\\{\"id\":\"([^\"]*)\".*", "$1");
                    c.write(ByteBuffer.wrap(("{\"id\":\"" + id + "\",\"status\":\"accepted\",\"seq\":" + (++seq) + "}\n").getBytes(StandardCharsets.UTF_8)));
                }
            }
        } catch (IOException | InterruptedException e) {
            // the test is over
        }
    }

    private void acceptEach(java.util.function.Consumer<SocketChannel> each) {
        Thread acceptor = new Thread(() -> {
            try {
                while (true) {
                    SocketChannel c = server.accept();
                    accepted.add(c);
                    each.accept(c);
                }
            } catch (IOException closed) {
                // the test is over
            }
        }, "fake-sinkd-acceptor");
        acceptor.setDaemon(true);
        acceptor.start();
    }

    int connections() {
        return accepted.size();
    }

    @Override
    public void close() throws IOException {
        server.close();
        for (SocketChannel c : accepted) {
            c.close();
        }
        Files.deleteIfExists(socket);
    }
}
