package io.sinkd.conductor;

import java.lang.management.ManagementFactory;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;

/**
 * The latency a publish adds to a decider thread: THREADS threads together publish RATE messages/s
 * for SECONDS seconds (each thread on its own schedule), each timing its publish call; prints
 * p50/p99/max, the rate achieved (a thread waits for its answer before its next publish, as a
 * decider does) and the client's own CPU. Each record carries the context fields the EVENT task sends.
 *
 *   java -cp out/classes:out/bench io.sinkd.conductor.PublishBench SOCKET SINK_TYPE SINK_URI RATE THREADS SECONDS LABEL
 */
public final class PublishBench {
    public static void main(String[] args) throws Exception {
        Path socket = Path.of(args[0]);
        String type = args[1], uri = args[2];
        int rate = Integer.parseInt(args[3]), threads = Integer.parseInt(args[4]), seconds = Integer.parseInt(args[5]);
        String label = args[6];
        String payload = "{\"orderId\":\"" + "x".repeat(200) + "\",\"status\":\"paid\"}";
        ConcurrentLinkedQueue<long[]> results = new ConcurrentLinkedQueue<>();
        SinkdClient.Context context = new SinkdClient.Context("3f1c9a4e-6b7d-4e2a-9c1b-8d2e5f4a7b6c", "order_flow", "order-42", "notify_ref");
        try (SinkdClient client = new SinkdClient(socket, 4, Duration.ofSeconds(5))) {
            client.publish("warmup-" + label, type, uri, payload, context);
            var bean = (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
            long cpu0 = bean.getProcessCpuTime();
            long start = System.nanoTime();
            CountDownLatch done = new CountDownLatch(threads);
            int perThread = rate * seconds / threads;
            long interval = 1_000_000_000L * threads / rate;
            for (int t = 0; t < threads; t++) {
                int thread = t;
                Thread worker = new Thread(() -> {
                    long[] latencies = new long[perThread];
                    long due = start + interval * thread / threads;
                    for (int i = 0; i < perThread; i++) {
                        long now;
                        while ((now = System.nanoTime()) < due) {
                            long wait = due - now;
                            if (wait > 200_000) {
                                java.util.concurrent.locks.LockSupport.parkNanos(wait - 100_000);
                            }
                        }
                        long before = System.nanoTime();
                        client.publish(label + "-" + rate + "-" + threads + "-" + thread + "-" + i, type, uri, payload, context);
                        latencies[i] = System.nanoTime() - before;
                        due += interval;
                    }
                    results.add(latencies);
                    done.countDown();
                });
                worker.start();
            }
            done.await();
            double elapsed = (System.nanoTime() - start) / 1e9;
            double cpu = (bean.getProcessCpuTime() - cpu0) / 1e9;
            List<Long> all = new ArrayList<>();
            for (long[] l : results) {
                for (long v : l) {
                    all.add(v);
                }
            }
            long[] sorted = all.stream().mapToLong(Long::longValue).toArray();
            Arrays.sort(sorted);
            System.out.printf("%-9s %d publishes from %d threads at %d/s: %.0f/s achieved; publish latency p50 %.3f ms, p99 %.3f ms, max %.3f ms; client CPU %.1f %% of one core%n",
                    label, sorted.length, threads, rate, sorted.length / elapsed, sorted[sorted.length / 2] / 1e6,
                    sorted[(int) (sorted.length * 0.99)] / 1e6, sorted[sorted.length - 1] / 1e6, 100 * cpu / elapsed);
        }
    }
}
