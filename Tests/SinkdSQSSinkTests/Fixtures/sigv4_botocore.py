# Signs one request with botocore's SigV4Auth and prints its Authorization header, so the Swift
# signer can be checked against the reference implementation on the same input.
# usage: sigv4_botocore.py METHOD URL BODY_FILE TIMESTAMP(YYYYmmddTHHMMSSZ) REGION SERVICE KEY SECRET TOKEN|- [HEADER=VALUE ...]
import datetime
import sys
from unittest import mock

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

method, url, body_file, stamp, region, service, key, secret, token = sys.argv[1:10]
headers = dict(h.split("=", 1) for h in sys.argv[10:])
with open(body_file, "rb") as f:
    body = f.read()
request = AWSRequest(method=method, url=url, data=body, headers=headers)
now = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")
credentials = Credentials(key, secret, None if token == "-" else token)
with mock.patch("botocore.auth.get_current_datetime", return_value=now):
    SigV4Auth(credentials, service, region).add_auth(request)
print(request.headers["Authorization"])
