"""What the Kafka fault proxies (cut_proxy.py, delay_proxy.py) share: the client-to-broker pipe,
which notes each request's api key by correlation id, and running a proxy whose answers pass
through `pipe_responses(reader, writer, api_keys)`."""
import asyncio
import struct


async def pipe_requests(reader, writer, api_keys):
    """Forwards the client's bytes to the broker unchanged, noting api_keys[correlation id]."""
    buffer = b""
    try:
        while data := await reader.read(65536):
            buffer += data
            while len(buffer) >= 4:
                size = struct.unpack(">i", buffer[:4])[0]
                if len(buffer) < 4 + size:
                    break
                api_key, _, correlation = struct.unpack(">hhi", buffer[4:12])
                api_keys[correlation] = api_key
                buffer = buffer[4 + size:]
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()


def serve(listen_port, broker_port, pipe_responses):
    """Listens on LISTEN_PORT; each connection goes to the broker, answers through pipe_responses.
    Prints "listening" once ready."""

    async def handle(client_reader, client_writer):
        broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", broker_port)
        api_keys = {}
        await asyncio.gather(pipe_requests(client_reader, broker_writer, api_keys), pipe_responses(broker_reader, client_writer, api_keys),
                             return_exceptions=True)

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
        print("listening", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())
