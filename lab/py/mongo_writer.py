"""Writes through a MongoDB URI until a deadline, one insert_one at a time with
retryable writes (pymongo's default), and prints one JSON line per write:
{"start": t0, "end": t1, "ok": bool, "error": "..."} with wall-clock seconds.

Usage: mongo_writer.py URI SECONDS TAG
"""

import json
import sys
import time

import pymongo

uri, seconds, tag = sys.argv[1], float(sys.argv[2]), sys.argv[3]
client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=15000, connectTimeoutMS=5000, retryWrites=True)
coll = client.app.get_collection("election_" + tag)
deadline = time.time() + seconds
n = 0
out = []
while time.time() < deadline and n < 200000:
    n += 1
    start = time.time()
    try:
        coll.insert_one({"_id": f"{tag}-{n}"})
        out.append({"start": start, "end": time.time(), "ok": True})
    except pymongo.errors.PyMongoError as e:
        out.append({"start": start, "end": time.time(), "ok": False, "error": f"{type(e).__name__}: {e}"[:300]})
    time.sleep(0.005)
for line in out:
    print(json.dumps(line))
