"""A TCP proxy between sinkd and RabbitMQ that drops the broker's basic.ack and basic.nack frames
while the file FLAG exists (everything else passes, heartbeats included): a broker that lost its
publisher confirms, for issue 33's confirm deadline.

    confirm_dropping_proxy.py LISTEN_PORT BROKER_PORT FLAG

Prints "ready" once listening, then "dropped N" each time it drops a confirm."""
import asyncio
import os
import struct
import sys

listen_port, broker_port, flag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def frames(reader, writer):
    """Broker to client, frame by frame: type(1) channel(2) size(4) payload end(0xCE)."""
    dropped = 0
    try:
        while True:
            header = await reader.readexactly(7)
            kind, _channel, size = struct.unpack(">BHI", header)
            rest = await reader.readexactly(size + 1)
            if kind == 1 and size >= 4 and rest[:4] in (b"\x00\x3c\x00\x50", b"\x00\x3c\x00\x78") and os.path.exists(flag):
                dropped += 1
                print(f"dropped {dropped}", flush=True)
                continue
            writer.write(header + rest)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def handle(client_reader, client_writer):
    broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", broker_port)
    await asyncio.gather(pipe(client_reader, broker_writer), frames(broker_reader, client_writer))


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
