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
import sys
import time

import ingest  # scripts/lib/ingest.py, copied beside this file

path, sink, prefix, stopfile, resultfile = sys.argv[1:6]
accepted, rejected = set(), []
reconnects = connect_failures = 0
unanswered = []  # ids sent on the current connection, in order
to_resend = []   # ids answered with a retryable rejection: sent again
next_n = 0


def connect():
    global connect_failures
    c = ingest.Connection(path, connect_timeout=60, read_timeout=0.2)
    connect_failures += c.connect_failures
    return c


def line(record_id):
    return ingest.record(record_id, sink, {"id": record_id})


conn = connect()
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
            conn.send(line(record_id))
            unanswered.append(record_id)
        except OSError:
            pass  # the read below sees the end of the connection
    if stopping_since is not None and ((not unanswered and not to_resend) or time.monotonic() - stopping_since > 60):
        break
    answers = conn.answers()
    for answer in answers or []:
        if answer.id in unanswered:
            unanswered.remove(answer.id)
        if answer.ok:
            accepted.add(answer.id)
        elif answer.retryable:
            to_resend.append(answer.id)
        else:
            rejected.append([answer.id, answer.line])
    if answers is None:
        # sinkd went away (restart, upgrade): connect again and resend what it did not answer;
        # a resent record it had accepted is answered "duplicate".
        conn.close()
        reconnects += 1
        conn = connect()
        for record_id in list(unanswered):
            conn.send(line(record_id))
    if stopping_since is None:
        time.sleep(0.002)

with open(resultfile, "w") as f:
    json.dump({"accepted": sorted(accepted), "rejected": rejected, "reconnects": reconnects,
               "connect_failures": connect_failures, "sent": next_n, "unanswered": unanswered}, f)
