"""Decentralized NATS auth for one test (PyPI nkeys): an operator, an account and a user, their
JWTs signed with Ed25519 as nsc would sign them, printed as JSON: the server configuration needs
the operator JWT and the account JWT (memory resolver), sinkd the user's credentials file."""
import base64, hashlib, json, os, time

import nkeys

def b64(b): return base64.urlsafe_b64encode(b).decode().rstrip("=")
def kp(prefix):
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return nkeys.from_seed(seed), seed
def jwt(claims, signer):
    claims = dict(claims); claims["iat"] = int(time.time())
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()).decode().rstrip("=")
    h = b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    c = b64(json.dumps(claims).encode())
    sig = signer.sign((h + "." + c).encode())
    return h + "." + c + "." + b64(sig)
op, _ = kp(nkeys.PREFIX_BYTE_OPERATOR)
acc, _ = kp(nkeys.PREFIX_BYTE_ACCOUNT)
usr, useed = kp(nkeys.PREFIX_BYTE_USER)
opj = jwt({"iss": op.public_key.decode(), "sub": op.public_key.decode(), "name": "op", "nats": {"type": "operator", "version": 2}}, op)
accj = jwt({"iss": op.public_key.decode(), "sub": acc.public_key.decode(), "name": "acc", "nats": {"limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1}, "default_permissions": {"pub": {}, "sub": {}}, "type": "account", "version": 2}}, op)
usrj = jwt({"iss": acc.public_key.decode(), "sub": usr.public_key.decode(), "name": "sinkd", "nats": {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2}}, acc)
print(json.dumps({"operator": opj, "account_pub": acc.public_key.decode(), "account": accj, "user": usrj, "seed": useed.decode()}))
