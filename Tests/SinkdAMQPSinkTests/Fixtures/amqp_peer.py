"""An independent AMQP peer for sinkd's tests (pika, PyPI): sets up queues and bindings, and
reads back what sinkd published with every property.

    amqp_peer.py URL bind EXCHANGE TYPE QUEUE BINDING_KEY   declare the exchange and a queue, bind them
    amqp_peer.py URL get QUEUE MAX                          up to MAX messages, one JSON object per line
    amqp_peer.py URL count QUEUE                            messages ready in QUEUE (-1 if it does not exist)
    amqp_peer.py URL declare QUEUE DURABLE [MAX_LENGTH]     declare a classic queue (DURABLE 0 or 1); with
                                                            MAX_LENGTH, publishes beyond it are nacked
    amqp_peer.py URL conductor-queue QUEUE [MAX_PRIORITY]   declare QUEUE exactly as Conductor does (durable,
                                                            x-queue-type classic, x-max-priority): fails if
                                                            the broker finds it inequivalent to the existing one
"""
import base64, json, sys
import pika

url, command, *args = sys.argv[1:]
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
if command == "bind":
    exchange, kind, queue, key = args
    channel.exchange_declare(exchange=exchange, exchange_type=kind, durable=True)
    channel.queue_declare(queue=queue, durable=True)
    channel.queue_bind(queue=queue, exchange=exchange, routing_key=key)
elif command == "declare":
    queue, durable = args[0], args[1]
    arguments = {"x-max-length": int(args[2]), "x-overflow": "reject-publish"} if len(args) > 2 else None
    channel.queue_declare(queue=queue, durable=durable == "1", arguments=arguments)
elif command == "conductor-queue":
    arguments = {"x-queue-type": "classic"}
    if len(args) > 1:
        arguments["x-max-priority"] = int(args[1])
    channel.queue_declare(queue=args[0], durable=True, exclusive=False, auto_delete=False, arguments=arguments)
elif command == "count":
    try:
        print(channel.queue_declare(queue=args[0], passive=True).method.message_count)
    except pika.exceptions.ChannelClosedByBroker:
        print(-1)
elif command == "get":
    queue, limit = args[0], int(args[1])
    for _ in range(limit):
        method, props, body = channel.basic_get(queue=queue, auto_ack=True)
        if method is None:
            break
        print(json.dumps({
            "body": body.decode(), "routing_key": method.routing_key, "exchange": method.exchange,
            "message_id": props.message_id, "correlation_id": props.correlation_id,
            "content_type": props.content_type, "content_encoding": props.content_encoding,
            "delivery_mode": props.delivery_mode, "priority": props.priority, "timestamp": props.timestamp,
            "headers": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (props.headers or {}).items()},
        }))
connection.close()
