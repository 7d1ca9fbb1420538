#!/usr/bin/env python3
"""One SCRAM exchange computed by the scramp library (PyPI; client and server), for sinkd's
client to reproduce byte for byte. Prints four lines: client-first, server-first, client-final,
server-final.

  scram_vector.py MECHANISM USER PASSWORD CLIENT_NONCE SERVER_NONCE SALT_HEX ITERATIONS
"""
import sys

from scramp import ScramClient, ScramMechanism

mechanism, user, password, c_nonce, s_nonce, salt, iterations = sys.argv[1:8]
m = ScramMechanism(mechanism)
info = m.make_auth_info(password, iteration_count=int(iterations), salt=bytes.fromhex(salt))
server = m.make_server(lambda name: info, s_nonce=s_nonce)
client = ScramClient([mechanism], user, password, c_nonce=c_nonce)
first = client.get_client_first()
server.set_client_first(first)
server_first = server.get_server_first()
client.set_server_first(server_first)
final = client.get_client_final()
server.set_client_final(final)
server_final = server.get_server_final()
client.set_server_final(server_final)
print(first)
print(server_first)
print(final)
print(server_final)
