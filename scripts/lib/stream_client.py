#!/usr/bin/env python3
"""A Conductor-like client for the systemd tests: streams records to sinkd's ingest socket,
pipelined, and reconnects when the connection ends (a restart or an upgrade of sinkd), resending
what was not answered. Runs inside the booted systemd, as a user of group sinkd.

  stream_client.py SOCKET SINK PREFIX STOPFILE RESULTFILE

Sends PREFIX-0, PREFIX-1, ... until STOPFILE exists, then waits for the last answers and writes
RESULTFILE: {"accepted": [ids answered accepted or duplicate], "rejected": [[id, line]...] (not
retryable; a retryable rejection is sent again),
"reconnects": N, "connect_failures": N}.
"""
import json
import os
import socket
import sys
import time

path, sink, prefix, stopfile, resultfile = sys.argv[1:6]
accepted, rejected = set(), []
reconnects = connect_failures = 0
unanswered = []  # ids sent on the current connection, in order
to_resend = []   # ids answered with a retryable rejection: sent again
next_n = 0


def connect():
    global connect_failures
    deadline = time.monotonic() + 60
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            s.settimeout(0.2)
            return s
        except OSError:
            s.close()
            connect_failures += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def line(record_id):
    return (json.dumps({"id": record_id, "sink": sink, "payload": {"id": record_id}}) + "\n").encode()


sock = connect()
buffer = b""
stopping_since = None
while True:
    if stopping_since is None and os.path.exists(stopfile):
        stopping_since = time.monotonic()
    if (stopping_since is None or to_resend) and len(unanswered) < 20:
        if to_resend:
            record_id = to_resend.pop(0)
        else:
            record_id = f"{prefix}-{next_n}"
            next_n += 1
        try:
            sock.sendall(line(record_id))
            unanswered.append(record_id)
        except OSError:
            pass  # the read below sees the end of the connection
    if stopping_since is not None and ((not unanswered and not to_resend) or time.monotonic() - stopping_since > 60):
        break
    try:
        data = sock.recv(65536)
        closed = data == b""
    except socket.timeout:
        data, closed = b"", False
    except OSError:
        data, closed = b"", True
    buffer += data
    while b"\n" in buffer:
        raw, buffer = buffer.split(b"\n", 1)
        answer = json.loads(raw)
        if answer["id"] in unanswered:
            unanswered.remove(answer["id"])
        if answer["status"] in ("accepted", "duplicate"):
            accepted.add(answer["id"])
        elif answer.get("retryable"):
            to_resend.append(answer["id"])
        else:
            rejected.append([answer["id"], raw.decode()])
    if closed:
        # sinkd went away (restart, upgrade): connect again and resend what it did not answer;
        # a resent record it had accepted is answered "duplicate".
        sock.close()
        reconnects += 1
        buffer = b""
        sock = connect()
        for record_id in list(unanswered):
            sock.sendall(line(record_id))
    if stopping_since is None:
        time.sleep(0.002)

with open(resultfile, "w") as f:
    json.dump({"accepted": sorted(accepted), "rejected": rejected, "reconnects": reconnects,
               "connect_failures": connect_failures, "sent": next_n, "unanswered": unanswered}, f)
