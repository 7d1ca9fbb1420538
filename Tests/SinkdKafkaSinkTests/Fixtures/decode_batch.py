"""Decodes a v2 record batch (hex on stdin) with kafka-python's own reader (PyPI), an independent
implementation: checks the CRC and prints the records as JSON lines."""
import json, sys
from kafka.record.default_records import DefaultRecordBatch

data = bytes.fromhex(sys.stdin.read().strip())
batch = DefaultRecordBatch(data)
assert batch.validate_crc(), "CRC mismatch"
print(json.dumps({"producer_id": batch.producer_id, "producer_epoch": batch.producer_epoch,
                  "base_sequence": batch.base_sequence, "compression": batch.compression_type, "count": len(list(DefaultRecordBatch(data)))}))
for r in DefaultRecordBatch(data):
    print(json.dumps({"key": r.key.decode() if r.key is not None else None,
                      "value": r.value.decode() if r.value is not None else None,
                      "timestamp": r.timestamp,
                      "headers": [[k, v.decode() if v is not None else None] for k, v in r.headers]}))
