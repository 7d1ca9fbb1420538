#!/usr/bin/env python3
"""Sets up IAM in a moto server started with INITIAL_NO_AUTH_ACTION_COUNT (its first N requests are
not authenticated; every later one is, against what is created here). Prints one JSON object.

  moto_iam.py ENDPOINT role        role "app" allowed sqs:*                              (2 requests)
  moto_iam.py ENDPOINT sqs-user    user "sqs" allowed sqs:*, and its access key              (3 requests)
  moto_iam.py ENDPOINT assume-user role "app" allowed sqs:*, user "base" allowed only
                                   sts:AssumeRole, and the user's access key                  (5 requests)
"""
import json
import sys

import boto3

endpoint, mode = sys.argv[1], sys.argv[2]
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup")


def policy(action):
    return json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]})


out = {}
if mode in ("role", "assume-user"):
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:*"}]}
    out["role_arn"] = iam.create_role(RoleName="app", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName="app", PolicyName="sqs", PolicyDocument=policy("sqs:*"))
if mode in ("sqs-user", "assume-user"):
    user = "sqs" if mode == "sqs-user" else "base"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=policy("sqs:*" if mode == "sqs-user" else "sts:AssumeRole"))
    out["access_key_id"], out["secret_access_key"] = key["AccessKeyId"], key["SecretAccessKey"]
print(json.dumps(out))
