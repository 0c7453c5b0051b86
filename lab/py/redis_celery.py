"""Celery-like traffic through a Redis endpoint with kombu (Celery's own transport
library): a producer publishes numbered messages with Celery's default publish retry
policy (3 retries, 0.2 s apart), a consumer on its own connection consumes and acks
them, reconnecting after errors. Runs until STOP_FILE exists (or a bound is reached);
the consumer then drains until it has been quiet for 2 s (at most 20 s). Prints JSON
lines:

    {"kind": "publish", "n": N, "start": t0, "end": t1, "ok": bool, "error": "..."}
    {"kind": "received", "n": N, "t": t}
    {"kind": "consumer_error", "t": t, "error": "..."}

    redis_celery.py HOST PORT QUEUE STOP_FILE
"""

import json
import os
import socket
import sys
import threading
import time

from kombu import Connection, Exchange, Queue

host, port, queue_name, stop_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
URL = f"redis://{host}:{port}/0"
OPTIONS = {"socket_timeout": 5, "socket_connect_timeout": 5}
RETRY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
queue = Queue(queue_name, Exchange(queue_name, type="direct"), routing_key=queue_name)
out, lock = [], threading.Lock()
produced = threading.Event()
produced_at = [0.0]
HARD_STOP = time.time() + 600


def record(line):
    with lock:
        out.append(line)


def error_text(e):
    return f"{type(e).__name__}: {e}"[:300]


def produce():
    n = 0
    try:
        with Connection(URL, transport_options=OPTIONS) as conn:
            producer = conn.Producer(serializer="json")
            while not os.path.exists(stop_file) and time.time() < HARD_STOP and n < 1_000_000:
                n += 1
                start = time.time()
                try:
                    producer.publish({"n": n}, exchange=queue.exchange, routing_key=queue_name,
                                     declare=[queue], retry=True, retry_policy=RETRY)
                    record({"kind": "publish", "n": n, "start": start, "end": time.time(), "ok": True})
                except Exception as e:  # what the application would see
                    record({"kind": "publish", "n": n, "start": start, "end": time.time(), "ok": False,
                            "error": error_text(e)})
                time.sleep(0.005)
    finally:
        produced_at[0] = time.time()
        produced.set()


def consume():
    last = time.time()

    def on_message(body, message):
        nonlocal last
        last = time.time()
        record({"kind": "received", "n": body["n"], "t": last})
        message.ack()

    def done():
        return produced.is_set() and (time.time() - last > 2 or time.time() - produced_at[0] > 20)

    while time.time() < HARD_STOP:
        try:
            with Connection(URL, transport_options=OPTIONS) as conn:
                with conn.Consumer([queue], callbacks=[on_message], accept=["json"]):
                    while True:
                        if done():
                            return
                        try:
                            conn.drain_events(timeout=0.5)
                        except socket.timeout:
                            pass
        except Exception as e:  # the connection broke: reconnect, as a Celery worker does
            record({"kind": "consumer_error", "t": time.time(), "error": error_text(e)})
            if done():
                return
            time.sleep(0.1)


threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for line in out:
    print(json.dumps(line))
