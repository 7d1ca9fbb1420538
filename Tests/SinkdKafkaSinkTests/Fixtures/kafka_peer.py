#!/usr/bin/env python3
"""The independent Kafka client of the tests: confluent-kafka (PyPI; librdkafka inside).

  kafka_peer.py consume BROKER TOPIC PARTITIONS COUNT TIMEOUT [CONFIG_JSON]
      reads every partition from offset 0 with assign() (Tansu gives consumer groups no
      assignment) until COUNT records or TIMEOUT seconds; one JSON line per record. CONFIG_JSON:
      more librdkafka settings (security.protocol, sasl.*, ssl.ca.location).
  kafka_peer.py follow BROKER TOPIC PARTITIONS FILE
      reads continuously (across broker restarts) and appends each record's key to FILE.
  kafka_peer.py place BROKER TOPIC KEY...
      produces one record per key with librdkafka's murmur2_random partitioner (the Java
      client's placement) and prints the partition librdkafka chose for each, in order.
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

command, broker, topic = sys.argv[1], sys.argv[2], sys.argv[3]
if command == "consume":
    partitions, count, timeout = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
    settings = {"bootstrap.servers": broker, "group.id": "sinkd-test", "enable.auto.commit": False}
    settings.update(json.loads(sys.argv[7]) if len(sys.argv) > 7 else {})
    c = Consumer(settings)
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen, deadline = 0, time.time() + timeout
    while seen < count and time.time() < deadline:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        headers = [[k, v.decode() if v is not None else None] for k, v in (m.headers() or [])]
        print(json.dumps({"partition": m.partition(), "offset": m.offset(), "key": m.key().decode() if m.key() is not None else None,
                          "value": m.value().decode() if m.value() is not None else None, "headers": headers}), flush=True)
        seen += 1
    c.close()
elif command == "follow":
    # Reads every partition from the start until killed, across broker restarts (offsets past a
    # new, shorter log start again from the earliest); one JSON line per record, flushed.
    partitions, path = int(sys.argv[4]), sys.argv[5]
    c = Consumer({"bootstrap.servers": broker, "group.id": "sinkd-follow", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "topic.metadata.refresh.interval.ms": 1000})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    with open(path, "a") as out:
        while True:
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            out.write(json.dumps({"partition": m.partition(), "key": m.key().decode() if m.key() is not None else None}) + "\n")
            out.flush()
elif command == "place":
    p = Producer({"bootstrap.servers": broker, "partitioner": "murmur2_random", "acks": "all"})
    placed = {}

    def report(err, msg):
        placed[msg.key().decode()] = -1 if err else msg.partition()

    for k in sys.argv[4:]:
        p.produce(topic, key=k.encode(), value=b"{}", on_delivery=report)
    p.flush(30)
    print(json.dumps([placed.get(k, -1) for k in sys.argv[4:]]))
else:
    sys.exit("unknown command " + command)
