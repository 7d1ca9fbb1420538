#!/usr/bin/env python3
"""A TCP proxy in front of a Kafka broker that plays a broker-side fault after the write: it
forwards everything, but when the answer to the CUT_AT-th Produce request (default 1) comes back
from the broker (which has stored the batch by then), it drops that answer and every later one and
closes the client's connection. Later connections are forwarded untouched. Prints "listening" once
ready, and "cut N" when it cut, N being how many Produce requests of that connection were still
unanswered by then (the cut one included: what the client had on the wire at once).

The cut waits (holding that answer back, at most 5 s) until at least two Produce requests are
unanswered: a client that keeps several batches in flight has them on the wire then whatever
the timing, so a test of batches on the wire at the cut does not depend on how fast the broker
answered the first ones.

  cut_proxy.py LISTEN_PORT BROKER_PORT [CUT_AT]
"""
import asyncio
import struct
import sys

from proxy_frames import serve

listen_port, broker_port = int(sys.argv[1]), int(sys.argv[2])
cut_at = int(sys.argv[3]) if len(sys.argv) > 3 else 1
state = {"cut": False, "answered": 0}


async def pipe_responses(reader, writer, api_keys):
    buffer = b""
    while True:
        data = await reader.read(65536)
        if not data:
            break
        buffer += data
        out = b""
        while len(buffer) >= 4:
            size = struct.unpack(">i", buffer[:4])[0]
            if len(buffer) < 4 + size:
                break
            correlation = struct.unpack(">i", buffer[4:8])[0]
            frame, buffer = buffer[:4 + size], buffer[4 + size:]
            if api_keys.get(correlation) == 0 and not state["cut"]:
                state["answered"] += 1
            if api_keys.get(correlation) == 0 and not state["cut"] and state["answered"] == cut_at:
                state["cut"] = True
                def unanswered():
                    return sum(1 for c, k in list(api_keys.items()) if k == 0 and c >= correlation)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 5
                while unanswered() < 2 and loop.time() < deadline:
                    await asyncio.sleep(0.01)
                outstanding = unanswered()
                print("cut %d" % outstanding, flush=True)
                writer.write(out)
                writer.close()
                return
            out += frame
        writer.write(out)
        await writer.drain()
    writer.close()


serve(listen_port, broker_port, pipe_responses)
