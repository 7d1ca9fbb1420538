package io.sinkd.conductor;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.concurrent.TimeUnit;

/** Free 127.0.0.1 ports for the test servers, and waiting for one to listen. */
final class LocalPorts {
    private LocalPorts() {}

    /** A port on 127.0.0.1 that was free a moment ago. */
    static int free() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    /** Waits up to {@code seconds} for {@code process} to listen on {@code port}; `what` names it in the error. */
    static void awaitListening(Process process, int port, int seconds, String what) throws IOException, InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (true) {
            try (Socket probe = new Socket()) {
                probe.connect(new InetSocketAddress("127.0.0.1", port), 200);
                return;
            } catch (IOException notYet) {
                if (!process.isAlive() || System.nanoTime() > deadline) {
                    process.destroyForcibly();
                    throw new IOException(what + " did not start on port " + port);
                }
                Thread.sleep(20);
            }
        }
    }
}
