"""The one ingest client of the Python scripts (crash-oracle, load, soak, stream_client): records
as sinkd's ingest socket takes them (one JSON object per line, docs/PROTOCOL.md) and its answers
read back (one JSON object per line, in the order of the records). The scripts keep only their
workload: how many connections, what pace, what to do with an answer.

    line = ingest.record("r-1", "redis:orders", {"id": "r-1"}, workflowType="w")
    c = ingest.Connection(path)              # blocking: threads, or a read timeout
    c.send(line); answers = c.answers()      # [] on a timeout, None once sinkd closed it
    a = await ingest.AsyncConnection.open(path)  # asyncio
    a.send(line); answer = await a.answer()
"""

import asyncio
import json
import socket
import time


def record(record_id, sink, payload, **fields):
    """One record's line: id, sink, payload and any other field of the protocol."""
    return (json.dumps({"id": record_id, "sink": sink, "payload": payload, **fields},
                       separators=(",", ":")) + "\n").encode()


class Answer:
    """One answer line: `ok` (accepted, or a duplicate of an accepted record), `retryable` (a
    rejection worth sending again: the WAL was full, sinkd was stopping), the raw `line`."""
    __slots__ = ("id", "status", "retryable", "line", "fields")

    def __init__(self, line):
        self.line = line.decode() if isinstance(line, bytes) else line
        self.fields = json.loads(self.line)
        self.id = self.fields.get("id")
        self.status = self.fields.get("status")
        self.retryable = bool(self.fields.get("retryable"))

    @property
    def ok(self):
        return self.status in ("accepted", "duplicate")


def split_answers(buffer):
    """The whole answer lines in `buffer` and what is left of it (a line still arriving)."""
    *lines, rest = buffer.split(b"\n")
    return [Answer(line) for line in lines if line.strip()], rest


class Connection:
    """A blocking connection. `connect_timeout`: how long to keep trying while the socket is not
    there yet or refuses (sinkd starting or restarting); `read_timeout`: how long `answers` waits
    (None: until something arrives)."""

    def __init__(self, path, connect_timeout=0, read_timeout=None):
        self.connect_failures = 0
        deadline = time.monotonic() + connect_timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                self.connect_failures += 1
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(read_timeout)
        self.buffer = b""

    def send(self, lines):
        """Sends whole lines (bytes); raises OSError once sinkd closed the connection."""
        self.sock.sendall(lines)

    def answers(self):
        """The answers that arrived: [] when the read timed out, None once the connection ended
        (what was not answered by then never will be on this connection)."""
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return []
        except OSError:
            return None
        if not chunk:
            return None
        found, self.buffer = split_answers(self.buffer + chunk)
        return found

    def close(self):
        self.sock.close()


class AsyncConnection:
    """An asyncio connection: `send` queues lines (`drain` waits for the socket), `answer` reads
    the next answer and raises ConnectionError once sinkd closed the connection."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path, limit=1 << 20):
        reader, writer = await asyncio.open_unix_connection(path, limit=limit)
        return cls(reader, writer)

    def send(self, lines):
        self.writer.write(lines)

    async def drain(self):
        await self.writer.drain()

    async def answer(self):
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("sinkd closed the connection")
        return Answer(line)

    def close(self):
        self.writer.close()
