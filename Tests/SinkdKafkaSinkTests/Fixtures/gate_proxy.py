#!/usr/bin/env python3
"""A Kafka listener with TLS and SASL in front of a plaintext broker (Tansu 0.6.0's TLS options
conflict with each other, and its SASL users can only be created over an authenticated
connection, which memory storage never has: see shared/reference/tansu.md). It plays the broker
side of Kafka's security the way Apache Kafka does:

- TLS by Python's ssl module (OpenSSL), with the given certificate and key.
- SASL after ApiVersions (KIP-152): SaslHandshake v0-v1 and SaslAuthenticate v0-v1 answered here,
  PLAIN by comparison, SCRAM-SHA-256/512 by the scramp library's server (an implementation
  independent of sinkd's client). Until a client has authenticated, any other request closes the
  connection, as Kafka's SaslServerAuthenticator does. A refused login gets error 58
  (SASL_AUTHENTICATION_FAILED) and the connection is closed.
- With --lifetime-ms, SaslAuthenticate v1 announces that session lifetime (KIP-368) and the first
  request after it ends closes the connection (Kafka's behaviour for an expired session).

Everything else (ApiVersions, Metadata, Produce...) is forwarded to the broker untouched. Prints
"listening" once ready, then one line per event: "authenticated USER MECH", "refused USER MECH",
"expired", "tls-failed".

  gate_proxy.py LISTEN_PORT BROKER_PORT [--tls CERT KEY] [--sasl USER PASSWORD]
                [--mechanisms PLAIN,SCRAM-SHA-256,SCRAM-SHA-512] [--lifetime-ms N]
"""
import argparse
import asyncio
import ssl
import struct
import time

from scramp import ScramException, ScramMechanism

parser = argparse.ArgumentParser()
parser.add_argument("listen", type=int)
parser.add_argument("broker", type=int)
parser.add_argument("--tls", nargs=2)
parser.add_argument("--sasl", nargs=2)
parser.add_argument("--mechanisms", default="PLAIN,SCRAM-SHA-256,SCRAM-SHA-512")
parser.add_argument("--lifetime-ms", type=int, default=0)
args = parser.parse_args()
mechanisms = args.mechanisms.split(",")
credentials = {}
if args.sasl:
    user, password = args.sasl
    for name in mechanisms:
        if name.startswith("SCRAM"):
            credentials[name] = ScramMechanism(name).make_auth_info(password, iteration_count=4096)


def event(text):
    print(text, flush=True)


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def frame(body):
    return struct.pack(">i", len(body)) + body


async def frames(reader):
    while True:
        head = await reader.readexactly(4)
        size = struct.unpack(">i", head)[0]
        yield await reader.readexactly(size)


class Session:
    def __init__(self, client_writer):
        self.client_writer = client_writer
        self.authenticated = not args.sasl
        self.mechanism = None
        self.scram = None
        self.expires = None

    def answer(self, correlation, body):
        self.client_writer.write(frame(struct.pack(">i", correlation) + body))

    def handshake(self, correlation, body):
        n = struct.unpack(">h", body[:2])[0]
        wanted = body[2:2 + n].decode()
        offered = b"".join(string(m) for m in mechanisms)
        if wanted not in mechanisms:
            self.answer(correlation, struct.pack(">hi", 33, len(mechanisms)) + offered)
            return False
        self.mechanism = wanted
        if wanted.startswith("SCRAM"):
            user_name = args.sasl[0]

            def lookup(name):
                if name != user_name:
                    raise ScramException("unknown user")
                return credentials[wanted]
            self.scram = ScramMechanism(wanted).make_server(lookup)
        self.answer(correlation, struct.pack(">hi", 0, len(mechanisms)) + offered)
        return True

    def authenticate(self, correlation, version, body):
        n = struct.unpack(">i", body[:4])[0]
        token = body[4:4 + n]
        reply, done, refused = b"", False, False
        if self.mechanism == "PLAIN":
            parts = token.split(b"\0")
            done = len(parts) == 3 and parts[1].decode() == args.sasl[0] and parts[2].decode() == args.sasl[1]
            refused = not done
            who = parts[1].decode(errors="replace") if len(parts) == 3 else "?"
        elif self.scram is not None:
            who = args.sasl[0]
            try:
                if not hasattr(self, "first_done"):
                    self.scram.set_client_first(token.decode())
                    self.first_done = True
                    reply = self.scram.get_server_first().encode()
                else:
                    self.scram.set_client_final(token.decode())
                    reply = self.scram.get_server_final().encode()
                    done = True
            except ScramException:
                refused = True
        else:
            refused, who = True, "?"
        if refused:
            event(f"refused {who} {self.mechanism}")
            message = f"Authentication failed during authentication due to invalid credentials with SASL mechanism {self.mechanism}"
            body = struct.pack(">h", 58) + string(message) + struct.pack(">i", 0)
            if version >= 1:
                body += struct.pack(">q", 0)
            self.answer(correlation, body)
            return False
        body = struct.pack(">h", 0) + struct.pack(">h", -1) + struct.pack(">i", len(reply)) + reply
        if version >= 1:
            body += struct.pack(">q", args.lifetime_ms if done else 0)
        self.answer(correlation, body)
        if done:
            self.authenticated = True
            if args.lifetime_ms and version >= 1:
                self.expires = time.monotonic() + args.lifetime_ms / 1000
            event(f"authenticated {who} {self.mechanism}")
        return True


async def pump(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass
    writer.close()


async def handle(client_reader, client_writer):
    broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", args.broker)
    session = Session(client_writer)
    back = asyncio.ensure_future(pump(broker_reader, client_writer))
    try:
        async for request in frames(client_reader):
            api_key, version, correlation, client_len = struct.unpack(">hhih", request[:10])
            body = request[10 + max(0, client_len):]
            if session.expires is not None and time.monotonic() > session.expires:
                event("expired")
                break
            if session.authenticated or api_key == 18:
                broker_writer.write(frame(request))
                await broker_writer.drain()
            elif api_key == 17:
                if not session.handshake(correlation, body):
                    break
            elif api_key == 36:
                ok = session.authenticate(correlation, version, body)
                await client_writer.drain()
                if not ok:
                    break
            else:
                break
            await client_writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass
    back.cancel()
    broker_writer.close()
    client_writer.close()


async def main():
    context = None
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls[0], args.tls[1])
    server = await asyncio.start_server(handle, "127.0.0.1", args.listen, ssl=context)
    event("listening")
    async with server:
        await server.serve_forever()

asyncio.run(main())
