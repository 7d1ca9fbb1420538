package io.sinkd.conductor;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * moto's server mode (PyPI moto[server], which scripts/test installs): an SQS-compatible server on
 * a free 127.0.0.1 port; read back with boto3.
 */
final class MotoServer implements AutoCloseable {
    private final int port;
    private final Process process;

    MotoServer() throws IOException, InterruptedException {
        port = LocalPorts.free();
        process = new ProcessBuilder("moto_server", "-H", "127.0.0.1", "-p", Integer.toString(port))
                .redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        LocalPorts.awaitListening(process, port, 30, "moto_server (pip install 'moto[server]'; scripts/test installs it)");
    }

    String endpoint() {
        return "http://127.0.0.1:" + port;
    }

    /** Up to {@code count} messages of {@code queue}, as "MessageGroupId Body" lines, waiting up to 20 s. */
    List<String> receive(String queue, int count) throws IOException, InterruptedException {
        String script = String.join("\n",
                "import sys, time, boto3",
                "c = boto3.client('sqs', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')",
                "deadline, got, url = time.time() + 20, [], None",
                "while time.time() < deadline and len(got) < int(sys.argv[3]):",
                "    try:",
                "        url = url or c.get_queue_url(QueueName=sys.argv[2])['QueueUrl']",
                "    except Exception:",
                "        time.sleep(0.1); continue",
                "    r = c.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=['MessageGroupId'])",
                "    for m in r.get('Messages', []):",
                "        got.append(m.get('Attributes', {}).get('MessageGroupId', '-') + ' ' + m['Body'])",
                "print('\\n'.join(got))");
        Process p = new ProcessBuilder("python3", "-c", script, endpoint(), queue, Integer.toString(count))
                .redirectError(ProcessBuilder.Redirect.INHERIT).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (p.waitFor() != 0) {
            throw new IOException("reading " + queue + " with boto3 failed");
        }
        return out.lines().filter(l -> !l.isEmpty()).toList();
    }

    @Override
    public void close() {
        process.destroy();
        try {
            if (!process.waitFor(10, TimeUnit.SECONDS)) {
                process.destroyForcibly();
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            process.destroyForcibly();
        }
    }
}
