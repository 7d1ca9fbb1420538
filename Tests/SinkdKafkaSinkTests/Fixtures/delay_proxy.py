#!/usr/bin/env python3
"""A TCP proxy in front of a Kafka broker that plays a slow broker (issue 33). Requests pass at
once (the broker stores the batches); Produce answers are held back:

  delay_proxy.py LISTEN_PORT BROKER_PORT late N SECONDS
      the N-th Produce answer (and, to keep their order, those behind it on its connection) is
      delivered SECONDS late.
  delay_proxy.py LISTEN_PORT BROKER_PORT slow SECONDS FOR
      for FOR seconds from the first Produce answer, every answer is delivered SECONDS late.
  delay_proxy.py LISTEN_PORT BROKER_PORT blackhole FOR
      for FOR seconds from the first Produce answer, answers are dropped; at its end the
      connections that dropped some are cut.

Other answers (metadata, InitProducerId) pass at once. Prints "listening" once ready and one line
per answer held or dropped."""
import asyncio
import struct
import sys
import time

from proxy_frames import serve

listen_port, broker_port, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
args = [float(a) for a in sys.argv[4:]]
state = {"produce_answers": 0, "first": None}


def hold_for(now):
    """Seconds to hold a Produce answer arriving now, or None to drop it."""
    state["produce_answers"] += 1
    if state["first"] is None:
        state["first"] = now
    elapsed = now - state["first"]
    if mode == "late":
        return args[1] if state["produce_answers"] == int(args[0]) else 0
    if mode == "slow":
        return args[0] if elapsed < args[1] else 0
    if mode == "blackhole":
        return None if elapsed < args[0] else 0
    raise SystemExit("unknown mode " + mode)


async def pipe_responses(reader, writer, api_keys):
    buffer = b""
    release_at = 0.0  # answers leave in order: none before the one held ahead of it
    dropped = False
    try:
        while data := await reader.read(65536):
            buffer += data
            while len(buffer) >= 4:
                size = struct.unpack(">i", buffer[:4])[0]
                if len(buffer) < 4 + size:
                    break
                correlation = struct.unpack(">i", buffer[4:8])[0]
                frame, buffer = buffer[:4 + size], buffer[4 + size:]
                now = time.monotonic()
                if api_keys.get(correlation) == 0:
                    hold = hold_for(now)
                    if hold is None:
                        print("dropped %d" % correlation, flush=True)
                        dropped = True
                        continue
                    if hold > 0:
                        print("held %d for %.1f s" % (correlation, hold), flush=True)
                    release_at = max(release_at, now + hold)
                if mode == "blackhole" and dropped and time.monotonic() - state["first"] >= args[0]:
                    writer.close()
                    return
                wait = release_at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(frame)
                await writer.drain()
    except ConnectionError:
        pass
    writer.close()


serve(listen_port, broker_port, pipe_responses)
