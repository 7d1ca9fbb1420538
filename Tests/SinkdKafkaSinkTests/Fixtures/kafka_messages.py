#!/usr/bin/env python3
"""Kafka requests and responses encoded by kafka-python (PyPI), whose message classes are generated
from Kafka's own message definitions (clients/src/main/resources/common/message/*.json): an
independent encoder to check sinkd's codec against, byte for byte. Prints hex.

  kafka_messages.py metadata-request VERSION CORRELATION CLIENT ALLOW_AUTO TOPIC...
  kafka_messages.py metadata-response VERSION CORRELATION
  kafka_messages.py produce-request VERSION CORRELATION CLIENT TIMEOUT TOPIC PARTITION=HEX...
  kafka_messages.py produce-response VERSION CORRELATION
  kafka_messages.py describe-configs-request VERSION CORRELATION CLIENT TOPIC KEY...
  kafka_messages.py describe-configs-response VERSION CORRELATION
  kafka_messages.py sasl-handshake-request VERSION CORRELATION CLIENT MECHANISM
  kafka_messages.py sasl-handshake-response VERSION CORRELATION ERROR MECHANISM...
  kafka_messages.py sasl-authenticate-request VERSION CORRELATION CLIENT HEX
  kafka_messages.py sasl-authenticate-response VERSION CORRELATION ERROR MESSAGE HEX LIFETIME_MS
"""
import sys

from kafka.protocol.admin import DescribeConfigsRequest, DescribeConfigsResponse
from kafka.protocol.metadata import MetadataRequest, MetadataResponse
from kafka.protocol.producer import ProduceRequest, ProduceResponse
from kafka.protocol.sasl import SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse

command, version, correlation = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
args = sys.argv[4:]

if command == "metadata-request":
    client, allow, topics = args[0], args[1] == "true", args[2:]
    kw = dict(topics=[MetadataRequest.MetadataRequestTopic(name=t) for t in topics], allow_auto_topic_creation=allow)
    if version >= 8:
        kw.update(include_cluster_authorized_operations=False, include_topic_authorized_operations=False)
    m = MetadataRequest[version](**kw)
    m.with_header(correlation_id=correlation, client_id=client)
    print(m.encode(header=True, framed=True).hex())
elif command == "metadata-response":
    B, T = MetadataResponse.MetadataResponseBroker, MetadataResponse.MetadataResponseTopic
    P = T.MetadataResponsePartition

    def part(index, leader, error=0):
        return P(error_code=error, partition_index=index, leader_id=leader, leader_epoch=3, replica_nodes=[1, 2], isr_nodes=[1, 2], offline_replicas=[])

    m = MetadataResponse[version](
        throttle_time_ms=0, cluster_id="cluster-1", controller_id=2, authorized_operations=set(),
        brokers=[B(node_id=1, host="127.0.0.1", port=9092, rack=None), B(node_id=2, host="kafka-2.internal", port=9093, rack="r1")],
        topics=[T(error_code=0, name="orders", is_internal=False, authorized_operations=set(),
                  partitions=[part(2, 1), part(0, 1), part(1, 2, error=9)]),
                T(error_code=3, name="missing", is_internal=False, authorized_operations=set(), partitions=[])])
    m.with_header(correlation_id=correlation)
    print(m.encode(header=True).hex())
elif command == "produce-request":
    client, timeout, topic, parts = args[0], int(args[1]), args[2], args[3:]
    D = ProduceRequest.TopicProduceData
    data = [D.PartitionProduceData(index=int(p.split("=")[0]), records=bytes.fromhex(p.split("=")[1])) for p in parts]
    m = ProduceRequest[version](transactional_id=None, acks=-1, timeout_ms=timeout, topic_data=[D(name=topic, partition_data=data)])
    m.with_header(correlation_id=correlation, client_id=client)
    print(m.encode(header=True, framed=True).hex())
elif command == "produce-response":
    R = ProduceResponse.TopicProduceResponse
    P = R.PartitionProduceResponse
    E = P.BatchIndexAndErrorMessage
    kw8 = lambda errors, message: dict(record_errors=errors, error_message=message) if version >= 8 else {}
    m = ProduceResponse[version](throttle_time_ms=5, responses=[R(name="orders", partition_responses=[
        P(index=0, error_code=0, base_offset=41, log_append_time_ms=-1, log_start_offset=0, **kw8([], None)),
        P(index=1, error_code=46, base_offset=-1, log_append_time_ms=-1, log_start_offset=0, **kw8([], None)),
        P(index=2, error_code=10, base_offset=-1, log_append_time_ms=-1, log_start_offset=0,
          **kw8([E(batch_index=1, batch_index_error_message="too big")], "a record is too large")),
    ])])
    m.with_header(correlation_id=correlation)
    print(m.encode(header=True).hex())
elif command == "sasl-handshake-request":
    m = SaslHandshakeRequest[version](mechanism=args[1])
    m.with_header(correlation_id=correlation, client_id=args[0])
    print(m.encode(header=True, framed=True).hex())
elif command == "sasl-handshake-response":
    m = SaslHandshakeResponse[version](error_code=int(args[0]), mechanisms=args[1:])
    m.with_header(correlation_id=correlation)
    print(m.encode(header=True).hex())
elif command == "sasl-authenticate-request":
    m = SaslAuthenticateRequest[version](auth_bytes=bytes.fromhex(args[1]))
    m.with_header(correlation_id=correlation, client_id=args[0])
    print(m.encode(header=True, framed=True).hex())
elif command == "sasl-authenticate-response":
    kw = dict(session_lifetime_ms=int(args[3])) if version >= 1 else {}
    m = SaslAuthenticateResponse[version](error_code=int(args[0]), error_message=args[1] or None, auth_bytes=bytes.fromhex(args[2]), **kw)
    m.with_header(correlation_id=correlation)
    print(m.encode(header=True).hex())
elif command == "describe-configs-request":
    Res = DescribeConfigsRequest.DescribeConfigsResource
    m = DescribeConfigsRequest[version](resources=[Res(resource_type=2, resource_name=args[1], configuration_keys=args[2:])], include_synonyms=False)
    m.with_header(correlation_id=correlation, client_id=args[0])
    print(m.encode(header=True, framed=True).hex())
elif command == "describe-configs-response":
    Result = DescribeConfigsResponse.DescribeConfigsResult
    C = Result.DescribeConfigsResourceResult
    S = C.DescribeConfigsSynonym
    m = DescribeConfigsResponse[version](throttle_time_ms=0, results=[
        Result(error_code=0, error_message=None, resource_type=2, resource_name="orders", configs=[
            C(name="max.message.bytes", value="524288", read_only=False, config_source=1, is_sensitive=False,
              synonyms=[S(name="max.message.bytes", value="524288", source=1), S(name="message.max.bytes", value="1048588", source=5)]),
            C(name="cleanup.policy", value="delete", read_only=False, config_source=5, is_sensitive=False, synonyms=[])]),
        Result(error_code=3, error_message="no such topic", resource_type=2, resource_name="missing", configs=[])])
    m.with_header(correlation_id=correlation)
    print(m.encode(header=True).hex())
else:
    sys.exit("unknown command " + command)
